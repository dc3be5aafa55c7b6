"""`higgs-ds plan` against peak memory measured by bench/step.py on CPU."""
import json
import os
import subprocess
import sys

import pytest

from higgs_ds.commands.plan import GiB, estimate
from tests.commands.test_plan import TOL
from tests.helpers import ROOT

CPU_CELLS = [("fused", 256, 2, 512, 1024, "lora"), ("higgs_ds", 256, 2, 512, 2048, "lora"),
             ("naive", 256, 2, 512, 768, "lora"), ("fused", 256, 2, 512, 1024, "audio"),
             ("fused", 256, 2, 512, 1024, "full")]


@pytest.mark.slow
@pytest.mark.parametrize("variant, hidden, layers, inter, tokens, finetune", CPU_CELLS)
def test_cpu_measured_peak(variant, hidden, layers, inter, tokens, finetune):
    """What a step adds on top of the built model (activations, loss buffers, grads, AdamW states), measured as in
    bench/step.py (own process, VmHWM, less the CPU runtime state the warm-up left), vs the plan for the same config
    (fp32, no DeepSpeed). Steady state, after a warm-up step, as the plan predicts and bench/gpu_step.py measures:
    AdamW creates its moments in the first `opt.step()`, after that step's activations are freed, so only from the
    second step on do they sit under them."""
    cmd = [sys.executable, os.path.join(ROOT, "bench", "step.py"), "--one", variant, "--hidden", str(hidden),
           "--layers", str(layers), "--intermediate", str(inter), "--tokens", str(tokens), "--warmup", "1", "--steps", "1",
           "--finetune", finetune]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20)))
    assert r.returncode == 0, r.stderr[-3000:]
    cell = json.loads(r.stdout.strip().splitlines()[-1])
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from step import config_from  # the bench's own config builder

    args = type("A", (), dict(hidden=hidden, layers=layers, intermediate=inter))
    cfg = config_from(args).to_dict()
    ckpt = "all" if cell["ckpt"] else "off"
    est = estimate(cfg, tokens, ckpt=ckpt, loss="fused" if cell["fused_loss"] else "naive", dtype="fp32",
                   finetune=finetune)
    assert (est["params"], est["trainable"]) == (cell["params"], cell["trainable"])
    predicted = est["total_gib"] * GiB - 4 * est["params"]
    measured = cell["peak_bytes"] - cell["model_bytes"]
    assert abs(predicted - measured) <= TOL * measured, (predicted / 2**20, measured / 2**20)

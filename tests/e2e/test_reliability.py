"""End to end: preemption (SIGTERM -> save -> exit -> --resume auto), non-finite steps skipped with
weights and optimizer state unchanged, an abort after N in a row, a rank without trainable audio, a dead rank.
Scenarios are chained in few runs (each train.py start costs ~10 s of imports and loading on 2 cores)."""
import glob
import json
import os
import signal
import subprocess
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from higgs_ds.engine.checkpoint import STATE_FILE, complete_tags
from higgs_ds.errors import EXIT_NONFINITE, EXIT_PREEMPTED
from higgs_ds.faults import ENV
from tests.helpers import DEEPSPEED, PYTHON, ROOT

pytestmark = pytest.mark.slow
COMMON = ["--deepspeed", "ds_configs/cpu_zero2.json", "--batch_size", "2", "--num_epochs", "50", "--max_steps", "100",
          "--learning_rate", "3e-3", "--warmup_ratio", "0", "--no_progress", "--save_every", "1", "--keep_last", "0"]


@pytest.fixture(scope="module")
def data(small_data, small_dataset):  # the train file prepared once (small_dataset), reused by every run
    return ["--train_data", small_data[0]]


def _start(cmd, faults):
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, ENV: faults}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _run_until(proc, marker, timeout=300):
    """Read the output until a line containing `marker`; returns the output so far."""
    out, t0 = [], time.time()
    for line in proc.stdout:
        out.append(line)
        if marker in line or time.time() - t0 > timeout:
            break
    return "".join(out)


def _finish(proc, timeout=300):
    try:
        rest, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return rest


def _tag(out, step):
    return os.path.join(out, "checkpoints", f"step{step}")


def _tensors(obj, prefix=""):
    """Every tensor in a (nested) checkpoint object, by path."""
    if torch.is_tensor(obj):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}/{key}").items()}


def _state(out, step):
    """(LoRA adapter weights, ZeRO optimizer state tensors of every rank) of checkpoint `step`."""
    tag = _tag(out, step)
    lora = load_file(os.path.join(tag, "adapter", "adapter_model.safetensors"))
    optim = {}
    for f in sorted(glob.glob(os.path.join(tag, "*optim_states.pt"))):
        optim.update(_tensors(torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"],
                              os.path.basename(f)))
    assert lora and optim
    return lora, optim


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(out, step):
    with open(os.path.join(_tag(out, step), STATE_FILE)) as f:
        return json.load(f)["history"]


def _assert_skipped(out, skipped_steps, after):
    """Steps in `skipped_steps` left LoRA weights and optimizer state exactly as they were; the next one did not."""
    before = min(skipped_steps) - 1
    ref = _state(out, before)
    for s in skipped_steps:
        lora, optim = _state(out, s)
        assert _equal(lora, ref[0]) and _equal(optim, ref[1]), f"step {s} changed weights or optimizer state"
    lora, optim = _state(out, after)
    assert not _equal(lora, ref[0]) and not _equal(optim, ref[1])
    hist = {h["step"]: h for h in _history(out, after)}
    assert [s for s in sorted(hist) if hist[s]["train/step_skipped"]] == sorted(skipped_steps)
    assert hist[after]["train/skipped_steps"] == len(skipped_steps)


def test_one_process_nan_skips_sigterm_resume_and_abort(data, tmp_path):
    out = str(tmp_path / "run")
    cmd = [PYTHON, "higgs_ds/train.py", *COMMON, *data, "--output_dir", out]
    # 1. NaN loss at step 3, inf gradient (finite loss) at step 4: both skipped; after step 6 SIGTERM to the process
    # group, as SLURM and Ctrl-C do (DataLoader workers included: they must not die and take the run with them).
    # (Step 1 runs at the warmup's lr 0: the skipped steps come after applied steps that moved the weights.)
    proc = _start(cmd + ["--num_workers", "2"], "nan_loss@3,inf_grad@4")
    log = _run_until(proc, "step 6/")
    os.killpg(proc.pid, signal.SIGTERM)
    log += _finish(proc)
    assert proc.returncode == EXIT_PREEMPTED, log[-3000:]
    assert "received SIGTERM" in log and "--resume auto" in log
    stopped = complete_tags(os.path.join(out, "checkpoints"))[-1][0]
    assert stopped >= 6 and f"stopped after optimizer step {stopped}" in log
    assert "step 3: non-finite loss or gradient" in log and "step 4: non-finite" in log
    _assert_skipped(out, [3, 4], after=5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(os.path.join(out, "tensorboard")).Reload()
    assert [(e.step, e.value) for e in tb.Scalars("train/skipped_steps")][:5] == [(1, 0), (2, 0), (3, 1), (4, 2), (5, 2)]

    # 2. --resume auto continues from that checkpoint; 3 NaN steps in a row then abort naming the last good one
    first = stopped + 1
    proc = _start(cmd + ["--resume", "auto", "--max_consecutive_skips", "3"], f"nan_loss@{first + 1}-{first + 5}")
    log = _finish(proc)
    assert proc.returncode == EXIT_NONFINITE, log[-3000:]
    assert f"resumed from {_tag(out, stopped)}: step {stopped}" in log
    assert f"3 consecutive optimizer steps (up to step {first + 3})" in log
    assert f"the last good checkpoint is {_tag(out, first + 2)}" in log
    hist = {h["step"]: h for h in _history(out, first + 2)}
    assert hist[first]["train/step_skipped"] == 0 and hist[first + 2]["train/skipped_steps"] == 4  # 2 + 2 after resume
    assert _equal(_state(out, first + 2)[0], _state(out, first)[0])


def _launcher_child(proc):
    """The per-node launcher (deepspeed/launcher/launch.py) started by the `deepspeed` runner."""
    for _ in range(100):
        kids = [p for p in psutil.Process(proc.pid).children() if "deepspeed.launcher.launch" in " ".join(p.cmdline())]
        if kids:
            return kids[0]
        time.sleep(0.1)
    raise AssertionError("no deepspeed.launcher.launch process")


def test_two_ranks_nan_on_one_rank_no_audio_sigterm_resume_dead_rank(data, tmp_path):
    out = str(tmp_path / "run2")
    cmd = [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29671", "higgs_ds/train.py", *COMMON, *data,
           "--output_dir", out, "--modules_to_save", "audio_head"]
    # rank 1 never has a labeled audio column (its audio_head gets no loss), NaN loss on rank 1 at step 3, inf
    # gradient on rank 0 at step 4; SIGTERM to the node launcher after step 5
    proc = _start(cmd, "no_audio_labels@1-100#1,nan_loss@3#1,inf_grad@4#0")
    log = _run_until(proc, "step 5/")
    _launcher_child(proc).send_signal(signal.SIGTERM)
    log += _finish(proc)
    stopped = complete_tags(os.path.join(out, "checkpoints"))[-1][0]
    assert stopped >= 5 and f"preempted: stopped after optimizer step {stopped}" in log, log[-3000:]
    assert "--resume auto" in log
    assert proc.returncode == 1  # launch.py's own code after forwarding a signal (its ranks exited 75)
    assert all(os.path.isfile(os.path.join(_tag(out, stopped), f"rng_rank{r}.json")) for r in (0, 1))
    _assert_skipped(out, [3, 4], after=5)

    # --resume auto continues; rank 1 is SIGKILLed in the middle of the second step after the resume
    first = stopped + 1
    t0 = time.time()
    proc = _start(cmd + ["--resume", "auto"], f"kill_mid_step@{first + 1}#1")
    log = _finish(proc, timeout=240)
    assert proc.returncode != 0 and time.time() - t0 < 240
    assert f"resumed from {_tag(out, stopped)}: step {stopped}" in log
    assert [s for s, _ in complete_tags(os.path.join(out, "checkpoints"))][-1] == first
    assert "rank(s) [1] on this node died" in log, log[-3000:]

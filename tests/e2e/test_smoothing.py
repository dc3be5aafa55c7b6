"""Smoother weights under ZeRO-2 on 2 ranks (engine/ema.py, inference/average.py): the weight average equals one
computed by hand from the checkpoints' saved adapters, it is the final adapter, a run killed mid-step and resumed
has exactly the uninterrupted run's average, and `higgs-ds export --average` writes the mean of the checkpoints'
adapters, each loaded independently with safetensors."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.test_resume import _killed, _resumed_from
from tests.helpers import DEEPSPEED, PYTHON, run_cmd

DECAY = 0.6
STEPS = 4
LAUNCH = [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29647", "higgs_ds/train.py",
          "--deepspeed", "ds_configs/cpu_zero2.json"]
ARGS = ["--batch_size", "1", "--max_steps", str(STEPS), "--learning_rate", "3e-3", "--no_progress",
        "--tensorboard_dir", "none", "--save_every", "1", "--keep_last", "0", "--eval_every", "1",
        "--ema_decay", str(DECAY)]
WEIGHTS = "adapter_model.safetensors"


def _adapter(d):
    return load_file(os.path.join(d, WEIGHTS))


def _tag(out, step):
    return os.path.join(out, "checkpoints", f"step{step}")


def _hand_ema(out):
    """The average folded by hand over the adapters saved at steps 1..STEPS (the trained weights of each step)."""
    ema = None
    for step in range(1, STEPS + 1):
        w = {k: v.double() for k, v in _adapter(os.path.join(_tag(out, step), "adapter")).items()}
        ema = w if ema is None else {k: DECAY * ema[k] + (1 - DECAY) * w[k] for k in w}
    return ema


@pytest.fixture(scope="module")
def runs(small_data, small_dataset, tmp_path_factory):
    """(uninterrupted run dir, killed-and-resumed run dir)."""
    root = tmp_path_factory.mktemp("smooth")
    data = ["--train_data", small_data[0], "--val_data", small_data[1]]  # the train file prepared once: small_dataset
    ref, again = str(root / "ref"), str(root / "again")
    run_cmd(LAUNCH + ARGS + data + ["--output_dir", ref])
    cmd = LAUNCH + ARGS + data + ["--output_dir", again, "--resume", "auto"]
    code, log = _killed(cmd, fault="kill_mid_step@3")  # every rank dies in step 3; step2/ is the newest checkpoint
    assert code != 0 and "adapter written" not in log, log[-3000:]
    log = run_cmd(cmd).stdout
    assert _resumed_from(log, os.path.join(again, "checkpoints"), 2), log[-3000:]
    return ref, again


@pytest.mark.slow
def test_weight_average_is_exact_saved_and_survives_a_kill(runs):
    ref, again = runs
    hand = _hand_ema(ref)
    final = _adapter(os.path.join(ref, "adapter"))  # the final artefact is the averaged weights
    assert set(final) == set(hand)
    for k in hand:
        torch.testing.assert_close(final[k].double(), hand[k], rtol=1e-6, atol=1e-7)
    last = _adapter(os.path.join(_tag(ref, STEPS), "adapter"))
    assert max((final[k] - last[k]).abs().max().item() for k in final) > 1e-4  # not just the last weights
    saved = torch.load(os.path.join(_tag(ref, STEPS), "ema.pt"), weights_only=True)
    assert saved["updates"] == STEPS and saved["decay"] == DECAY
    resumed = torch.load(os.path.join(_tag(again, STEPS), "ema.pt"), weights_only=True)
    assert resumed["updates"] == STEPS
    for k, v in saved["shadow"].items():  # bit for bit: the resumed run continued the saved average
        assert torch.equal(v, resumed["shadow"][k]), k
    final_again = _adapter(os.path.join(again, "adapter"))
    assert all(torch.equal(final[k], final_again[k]) for k in final)


@pytest.mark.slow
def test_export_average_is_the_mean_of_the_checkpoints(runs, tmp_path):
    ref, _ = runs
    for spec in ("last:3", "best:2"):
        out = str(tmp_path / spec.replace(":", "_"))
        run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", ref, "--output", out, "--average", spec])
        if spec == "last:3":
            steps = [2, 3, 4]
        else:  # the two lowest validation losses logged at checkpoint steps
            losses = {}
            for line in open(os.path.join(ref, "metrics.jsonl")):
                rec = json.loads(line)
                if "eval/loss/total" in rec:
                    losses[rec["step"]] = rec["eval/loss/total"]
            steps = sorted(sorted(losses, key=losses.get)[:2])
        assert json.load(open(os.path.join(out, "averaged.json")))["steps"] == steps
        got = _adapter(out)
        tags = [_adapter(os.path.join(_tag(ref, s), "adapter")) for s in steps]
        for k in got:
            mean = torch.stack([t[k].double() for t in tags]).mean(0)
            torch.testing.assert_close(got[k].double(), mean, rtol=1e-6, atol=1e-7)
        assert all(os.path.isfile(os.path.join(out, f)) for f in ("adapter_config.json", "README.md"))
    bad = run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", ref, "--output", str(tmp_path / "x"),
                   "--average", "last:9"], check=False)
    assert bad.returncode == 66 and "9 needed" in bad.stdout and "Traceback" not in bad.stdout

"""A training run's TensorBoard events match its metrics.json."""
import json
import os

import pytest

from tests.engine.test_metrics import _scalars
from tests.helpers import PYTHON, run_cmd


@pytest.mark.slow
def test_training_run_writes_tensorboard_matching_metrics_json(small_data, tiny_assets, tmp_path):
    out = str(tmp_path / "run")
    run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--val_data", small_data[1],
             "--batch_size", "1", "--gradient_accumulation_steps", "2", "--max_steps", "3", "--eval_every", "2",
             "--output_dir", out])
    with open(os.path.join(out, "metrics.json")) as f:
        history = json.load(f)["history"]
    s = _scalars(os.path.join(out, "tensorboard"))
    k = sum(1 for key in history[0] if key.startswith("loss/audio_cb"))
    assert k > 0
    tags = ["loss/text", "loss/audio", "lr", "grad_norm", "perf/tokens_per_s", "perf/samples_per_s",
            "perf/audio_seconds_per_s", "perf/peak_memory_gib", "perf/data_wait_fraction"]
    tags += [f"loss/audio_cb{i}" for i in range(k)] + [f"acc/audio_cb{i}" for i in range(k)]
    missing = [t for t in tags + ["eval/loss/audio", "eval/acc/audio_cb0"] if t not in s]
    assert not missing, missing
    assert [s["loss/audio"][h["step"]] for h in history] == pytest.approx([h["loss/audio"] for h in history], rel=1e-6)
    assert [s["perf/samples_per_s"][h["step"]] for h in history] == pytest.approx(
        [h["perf/samples_per_s"] for h in history], rel=1e-5)
    assert set(s["eval/loss/audio"]) == {2, 3}  # every 2 steps and at the end
    # the same scalars went through the JSONL sink (one metrics path, engine/sinks.py)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    steps = {ln["step"]: ln for ln in lines if "loss/audio" in ln}
    assert [steps[h["step"]]["loss/audio"] for h in history] == pytest.approx([h["loss/audio"] for h in history])
    assert {ln["step"] for ln in lines if "eval/loss/audio" in ln} == {2, 3}

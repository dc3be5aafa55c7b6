"""Every run writes output_dir/run_config.json; `train.py --config` on it replays the run's losses (to
float summation order)."""
import json
import os

import pytest

from tests.helpers import PYTHON, run_cmd

pytestmark = pytest.mark.slow


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def test_run_config_replays_the_run(small_data, small_dataset, tmp_path):
    first, replay = str(tmp_path / "first"), str(tmp_path / "replay")
    run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--val_data", small_data[1],
             "--max_steps", "3", "--seed", "3",
             "--learning_rate", "3e-3", "--lora_r", "4", "--output_dir", first, "--no_progress"], timeout=600)
    with open(os.path.join(first, "run_config.json")) as f:
        recorded = json.load(f)
    assert recorded["training"]["seed"] == 3 and recorded["finetune"]["lora_r"] == 4
    assert recorded["engine"]["deepspeed"].endswith("cpu_zero2.json")  # the resolved default, not null
    run_cmd([PYTHON, "higgs_ds/train.py", "--config", os.path.join(first, "run_config.json"), "--output_dir", replay],
            timeout=600)
    a, b = _metrics(first), _metrics(replay)
    losses = [h["loss/total"] for h in a["history"]]
    assert len(losses) == 3 and losses[-1] != losses[0]
    # the same run up to the CPU float summation order (~1e-7); a replay at lr 3.3e-3 moves val loss/text by 1e-2
    assert [h["loss/total"] for h in b["history"]] == pytest.approx(losses, rel=1e-6)
    assert b["val"].keys() == a["val"].keys()
    assert all(b["val"][k] == pytest.approx(v, rel=1e-6) for k, v in a["val"].items()), (a["val"], b["val"])
    with open(os.path.join(replay, "run_config.json")) as f:
        again = json.load(f)
    again["training"]["output_dir"] = first
    assert again == recorded


def test_unknown_key_in_config_is_one_clear_error(tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text('{\n  "training": {\n    "max_step": 3\n  }\n}\n')
    proc = run_cmd([PYTHON, "higgs_ds/train.py", "--config", str(cfg)], check=False, timeout=300)
    assert proc.returncode == 78, proc.stdout[-2000:]
    assert f"{cfg}:3: training.max_step: unknown key" in proc.stdout and "Traceback" not in proc.stdout

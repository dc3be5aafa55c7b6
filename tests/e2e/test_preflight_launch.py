"""train.py under the launcher fails on a bad config before the model loads."""
import os

import pytest

from tests.engine.test_preflight import _config
from tests.helpers import PYTHON, ROOT


@pytest.mark.slow
def test_train_py_fails_before_loading_the_model(tmp_path, small_data):
    """Through train.py: the ZeRO config error comes before any model or data loads (the output-dir check runs
    right after it, also before loading)."""
    import subprocess

    bad = _config(tmp_path, zero_optimization__overlap_comms=True)
    proc = subprocess.run([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--no_progress", "--deepspeed",
                           bad], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode != 0 and f"{bad}: zero_optimization.overlap_comms: Extra inputs" in proc.stdout
    assert "LoRA" not in proc.stdout and "loading samples" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("flags, says", [
    (["--sample_every", "1"], "--sample_every 1: generation during training is not supported under ZeRO-3"),
    (["--stage", "dpo", "--rounds", "1", "--val_data", "VAL"], "--rounds generates candidates with the live model: "
                                                                "not under ZeRO-3")])
def test_generation_in_training_is_refused_under_zero3_before_the_model_loads(tmp_path, small_data, flags, says):
    """ZeRO-3 ranks all-gather the weights in every forward, so generating different lengths would hang them: the
    previews and the rounds' sampling are refused with one message, EX_CONFIG, before the model loads."""
    import subprocess

    from higgs_ds.errors import EXIT_CONFIG

    flags = [small_data[1] if f == "VAL" else f for f in flags]
    proc = subprocess.run([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--no_progress", "--deepspeed",
                           "ds_configs/cpu_zero3.json", "--output_dir", str(tmp_path / "out"), *flags], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == EXIT_CONFIG and says in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and "trainable params" not in proc.stdout

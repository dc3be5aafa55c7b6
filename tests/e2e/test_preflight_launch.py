"""train.py under the launcher fails on a bad config before the model loads."""
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

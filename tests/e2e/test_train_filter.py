"""train.py --filter on a prepared dir's quality columns: trains on exactly the samples that pass, and reports what
each rule dropped in metrics.json (no scorer runs again)."""
import json
import os

import pytest

from tests.helpers import PYTHON, run_cmd

pytestmark = pytest.mark.slow


def test_train_filter_keeps_the_passing_samples_and_reports_the_drops(small_data, tmp_path):
    from higgs_ds.data.filters import read_quality

    prepared, out = str(tmp_path / "prepared"), str(tmp_path / "run")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "prepare", "--data", small_data[0], "--output", prepared, "--quality"])
    durations = sorted(q["duration"] for q in read_quality(prepared).values())
    cut = (durations[3] + durations[4]) / 2  # half of the 8 samples are at most this long
    rule = f"duration<={cut:g}"
    proc = run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", prepared, "--filter", rule, "--max_steps", "1",
                    "--output_dir", out, "--no_progress"], timeout=600)
    kept = sum(d <= float(f"{cut:g}") for d in durations)
    assert 0 < kept < len(durations)
    assert f"data: {kept} train samples" in proc.stdout
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["train_filtered"] == {rule: len(durations) - kept}
    with open(os.path.join(out, "run_config.json")) as f:
        assert json.load(f)["data"]["filter"] == rule

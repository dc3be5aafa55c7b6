"""The preference recipe end to end on the tiny model, through the commands as docs/PREFERENCE.md gives them:
`higgs-ds sample` -> `higgs-ds score` -> `higgs-ds pairs` -> `train.py --stage dpo` trains on the pairs."""
import json
import os
import re

import pytest

from tests.helpers import PYTHON, run_cmd

pytestmark = pytest.mark.slow


def test_sample_score_pairs_then_dpo_trains_on_them(tmp_path):
    from higgs_ds.data.synthetic import create_sample_data

    prompts, _ = create_sample_data(str(tmp_path / "data"), num_samples=4, seed=3)  # 3 prompts
    cands, scores, pairs, out = (str(tmp_path / n) for n in ("cands", "scores.json", "pairs.jsonl", "dpo"))
    cli = [PYTHON, "-m", "higgs_ds.cli"]
    run_cmd(cli + ["sample", "--data", prompts, "--output", cands, "--num_samples", "3", "--max_new_tokens", "30",
                   "--seed", "5"])
    run_cmd(cli + ["score", "--requests", os.path.join(cands, "candidates.jsonl"), "--output", scores])
    with open(scores) as f:
        rows = json.load(f)["rows"]
    with open(os.path.join(cands, "candidates.jsonl")) as f:
        assert len(rows) == len(f.readlines()) >= 6  # a generation without audio is left out
    assert all("sim" in r and "dnsmos_ovrl" in r and "k" in r for r in rows)
    said = run_cmd(cli + ["pairs", "--candidates", os.path.join(cands, "candidates.jsonl"), "--scores", scores,
                          "--output", pairs]).stdout
    n = int(re.search(r"(\d+) pairs written", said).group(1))
    assert n >= 2, said
    run_cmd([PYTHON, "higgs_ds/train.py", "--stage", "dpo", "--train_data", pairs, "--output_dir", out,
             "--batch_size", str(n), "--max_steps", "4", "--num_epochs", "10", "--learning_rate", "5e-3",
             "--no_progress"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f if '"pref/loss"' in line]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert steps[0]["pref/loss"] == pytest.approx(0.6931, abs=1e-3)  # the adapter starts as the reference
    assert steps[-1]["pref/loss"] < steps[0]["pref/loss"] and steps[-1]["pref/margin"] > 0
    assert os.path.isdir(os.path.join(out, "adapter"))

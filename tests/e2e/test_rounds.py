"""`train.py --stage dpo --rounds R` end to end on the tiny model: killed inside a round and resumed with --resume
auto, the round's candidates and pairs on disk are reused (not regenerated), the held-out record comes back from the
checkpoint, and the run ends with every round's held-out reward. (That the reward rises over the rounds beyond the
run-to-run spread is bench/rounds.py's claim: several seeds of longer runs, too slow for the test suite.)"""
import json
import os

import pytest

from higgs_ds.faults import ENV
from tests.e2e.test_resume import _killed
from tests.helpers import PYTHON, run_cmd

pytestmark = pytest.mark.slow
N = 2  # steps per round


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    from higgs_ds.data.synthetic import create_sample_data

    root = tmp_path_factory.mktemp("prompts")
    train, _ = create_sample_data(str(root / "train"), num_samples=5, seed=11)
    heldout, _ = create_sample_data(str(root / "heldout"), num_samples=3, seed=29)
    return train, heldout


def _cmd(prompts, out):
    train, heldout = prompts
    return [PYTHON, "higgs_ds/train.py", "--stage", "dpo", "--rounds", "2", "--samples_per_prompt", "2",
            "--steps_per_round", str(N), "--round_max_new_tokens", "40", "--train_data", train, "--val_data", heldout,
            "--output_dir", out, "--batch_size", "2", "--save_every", "1", "--resume", "auto", "--no_progress"]


def _stamps(root):
    """{path: (mtime_ns, bytes)} of every file under `root`."""
    found = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = (os.stat(path).st_mtime_ns, f.read())
    return found


def test_kill_inside_a_round_resumes_it_from_its_files(prompts, tmp_path):
    out = str(tmp_path / "out")
    code, log = _killed(_cmd(prompts, out), fault=f"kill_mid_step@{N + 1}")  # round 1's first step
    assert code != 0, log[-3000:]
    round1 = os.path.join(out, "rounds", "r1")
    before = _stamps(round1)
    assert "pairs.jsonl" in before and any(k.startswith("candidates") for k in before), sorted(before)
    with open(os.path.join(out, "checkpoints", f"step{N}", "rounds_state.json")) as f:
        held = json.load(f)["heldout"]
    assert len(held) == 1  # the held-out reward before round 0, in the checkpoint at the end of round 0

    log = run_cmd(_cmd(prompts, out), timeout=1200, env={ENV: ""}).stdout
    assert f"step{N}: step {N}," in log  # resumed inside round 1, from the end of round 0
    assert _stamps(round1) == before  # round 1's candidates and pairs: read back, not one file rewritten
    assert "r1/candidates: " not in log and "heldout0: " not in log  # nothing of round 0 or 1 sampled again
    with open(os.path.join(out, "rounds.json")) as f:
        rounds = json.load(f)
    assert len(rounds["heldout_reward"]) == 3 and rounds["heldout_reward"][0] == held[0]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["eval/round/index"] for r in rows if "eval/round/index" in r][-2:] == [1, 2]
    assert max(r.get("step", 0) for r in rows) == 2 * N

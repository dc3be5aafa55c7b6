"""`train.py --stage dpo` end to end: DPO on real speech raises held-out preference accuracy from chance; a 2-rank
ZeRO-2 run killed and resumed with --resume auto logs the uninterrupted run's losses."""
import json
import os

import pytest

from higgs_ds.faults import ENV
from tests.e2e.test_resume import _killed
from tests.helpers import DEEPSPEED, PYTHON, run_cmd

pytestmark = pytest.mark.slow
QUIET = ["--no_progress", "--tensorboard_dir", "none"]


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def _jsonl(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def speech_pairs(tmp_path_factory, tiny_assets):
    """(train pairs, held-out pairs) of espeak-ng voices (tests/e2e/dpo_pairs.py), prepared into the test cache as
    `--stage dpo` prepares them (once, before the runs)."""
    from tests.e2e.dpo_pairs import write_pairs

    root = str(tmp_path_factory.mktemp("speech_pairs"))
    train, held_out = write_pairs(root)
    _prepare_pairs([train, held_out], tiny_assets)
    return train, held_out


def _prepare_pairs(paths, tiny_assets):
    from higgs_ds.data.training_set import prepare_training_set
    from higgs_ds.data.validate import ValidationConfig

    for path in paths:
        prepare_training_set(path, tiny_assets.model_path, tiny_assets.audio_tokenizer_path,
                             ValidationConfig(require_pairs=True))


def test_dpo_on_speech_pairs_raises_held_out_preference_accuracy(speech_pairs, tmp_path):
    """Chosen = the reference's voice, rejected = the other voice saying the same text, both directions of the voice
    pair: ignoring the reference scores exactly chance. Held-out sentences are in no training pair."""
    train, held_out = speech_pairs
    out = str(tmp_path / "out")
    run_cmd([PYTHON, "higgs_ds/train.py", "--stage", "dpo", "--train_data", train, "--val_data", held_out,
             "--output_dir", out, "--num_epochs", "6", "--batch_size", "2",
             "--learning_rate", "2e-3", "--eval_every", "1000", "--no_progress"], timeout=1500)
    m = _metrics(out)
    assert m["val"]["pairs"] == 8
    assert m["val"]["pref/accuracy"] >= 0.75, m["val"]
    assert m["val"]["pref/margin"] > 0
    steps = _jsonl(out)
    assert all(k in steps[0] for k in ("pref/loss", "pref/accuracy", "pref/margin", "pref/logp_chosen",
                                      "pref/logp_rejected"))
    assert steps[0]["pref/accuracy"] == 0.5 and steps[0]["pref/margin"] == 0  # the adapter starts as the reference
    assert any(k.startswith("eval/pref/accuracy") for r in steps for k in r)
    assert os.listdir(os.path.join(out, "tensorboard"))


@pytest.fixture(scope="module")
def pair_data(small_data, tiny_assets, tmp_path_factory):
    """The synthetic train set as pairs: each sample's rejected audio is the next sample's target (prepared once)."""
    rows = [json.loads(line) for line in open(small_data[0])]
    base = os.path.dirname(small_data[0])
    for i, row in enumerate(rows):
        url = rows[(i + 1) % len(rows)]["messages"][4]["content"]["audio_url"]
        row["rejected"] = {"type": "audio", "audio_url": url if os.path.isabs(url) else os.path.join(base, url)}
    path = os.path.join(base, "pairs.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    _prepare_pairs([path], tiny_assets)
    return ["--train_data", path]


KEYS = ("loss/total", "pref/loss", "pref/accuracy", "pref/margin", "pref/logp_chosen", "grad_norm", "lr")


def _history(out):
    return {h["step"]: {k: h[k] for k in KEYS} for h in _metrics(out)["history"]}


def test_two_rank_zero2_dpo_killed_and_resumed_equals_uninterrupted(pair_data, tmp_path):
    """Stored reference log-probs (computed once at the start, read back on resume) under the deepspeed launcher. The
    LR is 0 for the first two steps: the kill comes after the weights have moved."""
    cmd = [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29641", "higgs_ds/train.py", "--stage", "dpo",
           "--reference", "stored", "--batch_size", "1", "--max_steps", "6", "--num_epochs", "2",
           "--learning_rate", "3e-3", "--save_every", "1", "--sft_weight", "0.1", *QUIET, *pair_data]
    whole = str(tmp_path / "whole")
    run_cmd(cmd + ["--output_dir", whole], timeout=1200)
    out = str(tmp_path / "killed")
    code, log = _killed(cmd + ["--output_dir", out, "--resume", "auto"], fault="kill_mid_step@5")
    assert code != 0 and not os.path.exists(os.path.join(out, "metrics.json")), log[-3000:]
    assert os.path.isfile(os.path.join(out, "reference_logps.pt"))
    proc = run_cmd(cmd + ["--output_dir", out, "--resume", "auto"], timeout=1200, env={ENV: ""})
    got, want = _history(out), _history(whole)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
    assert "resumed from" in proc.stdout and "reference log-probs read from" in proc.stdout

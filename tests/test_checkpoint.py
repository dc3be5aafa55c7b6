"""Checkpoints: discovery of complete tags, pruning, sampler skip, RNG round trip; exact resume end to end."""
import json
import os
import random

import numpy as np
import pytest
import torch

from conftest import DEEPSPEED, PYTHON, run_cmd
from higgs_ds.engine.checkpoint import (STATE_FILE, Checkpointer, SkipSampler, complete_tags, find_resume_dir,
                                        rng_state, set_rng_state)


def _tag(root, step, complete=True):
    d = os.path.join(root, "checkpoints", f"step{step}")
    os.makedirs(d)
    if complete:
        with open(os.path.join(d, STATE_FILE), "w") as f:
            json.dump({"step": step}, f)
    return d


def test_incomplete_tags_are_never_resumed(tmp_path):
    root = str(tmp_path)
    assert find_resume_dir("auto", root) is None
    _tag(root, 4)
    newest = _tag(root, 12)
    _tag(root, 16, complete=False)  # crashed mid-save: no trainer_state.json
    os.makedirs(os.path.join(root, "checkpoints", "other"))
    assert [s for s, _ in complete_tags(os.path.join(root, "checkpoints"))] == [4, 12]
    assert find_resume_dir("auto", root) == newest
    assert find_resume_dir(root, root) == newest  # an output dir
    assert find_resume_dir(os.path.join(root, "checkpoints"), "/elsewhere") == newest
    assert find_resume_dir(newest, "/elsewhere") == newest
    with pytest.raises(FileNotFoundError):
        find_resume_dir(str(tmp_path / "nothing"), root)


def test_keep_last_prunes_oldest_complete_tags(tmp_path):
    root = str(tmp_path)
    for s in (2, 4, 6, 8):
        _tag(root, s)
    Checkpointer(None, root, save_every=2, keep_last=2)._prune()
    assert [s for s, _ in complete_tags(os.path.join(root, "checkpoints"))] == [6, 8]
    assert not os.path.exists(os.path.join(root, "checkpoints", "step2"))


def test_skip_sampler_drops_only_the_next_epochs_first_indices():
    sampler = torch.utils.data.DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    wrapped = SkipSampler(sampler)
    wrapped.set_epoch(1)
    full = list(wrapped)
    wrapped.set_epoch(1)
    wrapped.skip = 4
    assert list(wrapped) == full[4:]
    assert list(wrapped) == full  # the skip applies once
    assert len(wrapped) == 10


def test_rng_state_round_trips_through_json():
    state = json.loads(json.dumps(rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # move every generator on
    set_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def _history(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return {h["step"]: h for h in json.load(f)["history"]}


LAUNCH = {1: [PYTHON], 2: [DEEPSPEED, "--num_accelerators", "2", "--master_port", "29623"]}


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_resume_mid_epoch_reproduces_the_uninterrupted_losses(small_data, tiny_assets, tmp_path, world):
    """8 steps straight vs N steps + checkpoint + resume: the later steps have the same losses. Batch 1 over 8
    samples: 1 rank has 8 steps per epoch (split at 4: mid-epoch); 2 ranks have 4 (ZeRO-2 sharded optimizer
    state; split at 2: mid-epoch, then the resumed run crosses into epoch 2)."""
    split = {1: 4, 2: 2}[world]
    common = LAUNCH[world] + ["higgs_ds/train.py", "--train_data", small_data[0], "--batch_size", "1",
                              "--max_steps", "8", "--num_epochs", "2", "--learning_rate", "3e-3", "--no_progress"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run_cmd(common + ["--output_dir", full])
    run_cmd(common + ["--output_dir", part, "--save_every", str(split), "--stop_after_steps", str(split)])
    tag = os.path.join(part, "checkpoints", f"step{split}")
    assert [s for s, _ in complete_tags(os.path.join(part, "checkpoints"))] == [split]
    assert os.path.isfile(os.path.join(tag, "adapter", "adapter_model.safetensors"))
    assert all(os.path.isfile(os.path.join(tag, f"rng_rank{r}.json")) for r in range(world))
    with open(os.path.join(tag, STATE_FILE)) as f:
        saved = json.load(f)
    assert (saved["step"], saved["epoch"], saved["batches_in_epoch"]) == (split, 0, split)
    proc = run_cmd(common + ["--output_dir", part, "--save_every", str(split), "--keep_last", "1", "--resume", "auto"])
    assert "resumed from" in proc.stdout and f"step {split + 1}/8" in proc.stdout
    assert f"step {split}/8" not in proc.stdout
    a, b = _history(full), _history(part)
    assert sorted(b) == list(range(1, 9))  # history carried over through the checkpoint
    for step in range(split + 1, 9):
        for key in ("loss/total", "loss/text", "loss/audio", "lr"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-9), (step, key)
    assert a[split + 1]["loss/audio"] != pytest.approx(a[split]["loss/audio"], rel=1e-5)  # the comparison can tell steps apart
    assert [s for s, _ in complete_tags(os.path.join(part, "checkpoints"))] == [8]  # keep_last 1

"""Checkpoints: atomic publication, discovery of complete tags, pruning, sampler skip, RNG round trip; end to end,
kill-anywhere resume with the uninterrupted run's losses (1 and 2 ranks) and resume on another world size through
DeepSpeed's universal checkpoint (2 ranks -> 1 rank)."""
import json
import logging
import os
import random
import shutil

import numpy as np
import pytest
import torch

from higgs_ds.checksums import file_crc32, share
from higgs_ds.data.resume import SkipSampler
from higgs_ds.durable import write_atomic
from higgs_ds.engine.checkpoint import (
    LATEST,
    STATE_FILE,
    Checkpointer,
    complete_tags,
    find_resume_dir,
    needs_universal,
    rng_state,
    set_rng_state,
)
from higgs_ds.errors import EXIT_DAMAGED, DamagedFile


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
    # saving step 6 after a resume from an older tag: tags past it (another timeline) stay, step 6 itself stays
    Checkpointer(None, root, save_every=2, keep_last=1)._prune(step=6)
    assert [s for s, _ in complete_tags(os.path.join(root, "checkpoints"))] == [6, 8]
    assert sorted(os.listdir(os.path.join(root, "checkpoints"))) == ["step6", "step8"]


def _manifest_tag(root, step, payload=b"engine state"):
    """A tag as Checkpointer.save publishes it: a file plus trainer_state.json listing its size."""
    d = _tag(root, step, complete=False)
    with open(os.path.join(d, "engine.pt"), "wb") as f:
        f.write(payload)
    with open(os.path.join(d, STATE_FILE), "w") as f:
        json.dump({"step": step, "world_size": 2, "files": {"engine.pt": len(payload)}}, f)
    return d


def test_latest_pointer_moves_last_and_truncated_tags_are_never_chosen(tmp_path):
    root = str(tmp_path)
    ckpt = os.path.join(root, "checkpoints")
    step2, step4 = _manifest_tag(root, 2), _manifest_tag(root, 4)
    write_atomic(os.path.join(ckpt, LATEST), "step2")  # killed after step4/ was renamed, before `latest` moved
    assert find_resume_dir("auto", root) == step2
    write_atomic(os.path.join(ckpt, LATEST), "step4")
    assert find_resume_dir("auto", root) == step4 == find_resume_dir(ckpt, "/elsewhere")
    with open(os.path.join(step4, "engine.pt"), "r+b") as f:  # a truncated file in the newest tag
        f.truncate(3)
    assert find_resume_dir("auto", root) == step2  # `latest` names an incomplete tag: newest complete one
    assert [s for s, _ in complete_tags(ckpt)] == [2]
    with pytest.raises(FileNotFoundError, match="truncated"):
        find_resume_dir(step4, root)
    write_atomic(os.path.join(ckpt, LATEST), "step9")  # a pruned or never-published tag
    assert find_resume_dir("auto", root) == step2
    assert not os.path.exists(os.path.join(ckpt, LATEST + ".tmp"))


def _crc_tag(root, step, payload):
    """A tag as Checkpointer.save publishes it now: trainer_state.json lists each file's size and CRC-32."""
    d = _manifest_tag(root, step, payload)
    with open(os.path.join(d, STATE_FILE)) as f:
        state = json.load(f)
    with open(os.path.join(d, STATE_FILE), "w") as f:
        json.dump({**state, "crc32": {"engine.pt": file_crc32(os.path.join(d, "engine.pt"))}}, f)
    return d


def test_a_checksum_mismatch_in_the_newest_tag_resumes_from_the_previous_one(tmp_path, caplog):
    """The newest tag's file overwritten with other bytes of the same size: complete by its sizes, but --resume auto
    takes the previous tag and logs which file and which tag; --resume to it names the file (exit 74)."""
    root = str(tmp_path)
    ckpt = os.path.join(root, "checkpoints")
    step2, step4 = _crc_tag(root, 2, b"engine state 2"), _crc_tag(root, 4, b"engine state 4")
    write_atomic(os.path.join(ckpt, LATEST), "step4")
    assert find_resume_dir("auto", root) == step4 == find_resume_dir(step4, root)
    with open(os.path.join(step4, "engine.pt"), "r+b") as f:  # one byte changed, size kept
        f.seek(3)
        f.write(b"X")
    assert [s for s, _ in complete_tags(ckpt)] == [2, 4]  # sizes alone cannot tell
    with caplog.at_level(logging.WARNING):
        assert find_resume_dir("auto", root) == step2 == find_resume_dir(ckpt, "/elsewhere")
    assert f"{step4}/engine.pt does not match the CRC-32" in caplog.text and f"resuming from {step2}" in caplog.text
    with pytest.raises(DamagedFile, match="engine.pt: does not match the CRC-32") as e:
        find_resume_dir(step4, root)
    assert e.value.exit_code == EXIT_DAMAGED
    with open(os.path.join(step2, "engine.pt"), "r+b") as f:  # every tag damaged: a fresh start, said so
        f.write(b"Y")
    assert find_resume_dir("auto", root) is None and "no intact checkpoint left" in caplog.text


def test_checksum_work_is_split_between_ranks_by_size(tmp_path):
    """Each file is read by one rank; a full model's states file (the largest) gets a rank of its own."""
    sizes = {"mp_rank_00_model_states.pt": 900, "rng_rank0.json": 10, "trainer_state.json": 5,
             **{f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt": 400 for r in range(3)}}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    shares = [share(str(tmp_path), sizes, 3, r) for r in range(3)]
    assert sorted(n for s in shares for n in s) == sorted(sizes)
    assert max(sum(sizes[n] for n in s) for s in shares) == 900


def test_leftovers_of_a_killed_save_are_never_chosen_and_are_removed(tmp_path):
    root = str(tmp_path)
    ckpt = os.path.join(root, "checkpoints")
    done = _manifest_tag(root, 2)
    partial = os.path.join(ckpt, "step4.tmp")
    shutil.copytree(done, partial)  # looks complete inside, but was never renamed into place
    with open(os.path.join(ckpt, LATEST + ".tmp"), "w") as f:
        f.write("step4")
    assert find_resume_dir("auto", root) == done
    Checkpointer(None, root, rank=1)  # only rank 0 cleans
    assert os.path.isdir(partial)
    Checkpointer(None, root)
    assert sorted(os.listdir(ckpt)) == ["step2"]


def test_world_size_change_is_detected_from_the_trainer_state(tmp_path):
    tag = _manifest_tag(str(tmp_path), 2)  # written by 2 ranks
    assert needs_universal(tag, 1) and not needs_universal(tag, 2) and not needs_universal(None, 1)
    assert not needs_universal(_tag(str(tmp_path), 4), 1)  # a trainer state without world_size: as before


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


# --- end to end: 6 optimizer steps of global batch 2 over the 8 samples (4 steps per epoch, so the runs cross an
# epoch boundary): 1 rank with accumulation 2, or 2 ranks (ZeRO-2 sharded optimizer state); fp32, fixed seed

"""bench/syncs.py: the training step runs no host-synchronising op, with activation checkpointing on and off, also
through train.py's own loader and step in a fresh process; the naive step runs many (the counter is real)."""
import os
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))


@pytest.fixture(scope="module")
def syncs():
    import syncs as bench_syncs

    return bench_syncs


def test_our_step_has_no_syncs_and_the_naive_one_many(syncs):
    for ckpt in (False, True):
        ours, ours_ops = syncs.measure(2, "higgs_ds", ckpt)
        assert ours == 0, (ckpt, ours_ops)
    naive, naive_ops = syncs.measure(2, "naive")
    assert naive > 20 and naive_ops.get("aten::nonzero", 0) > 10, naive_ops  # boolean indexing is seen


def test_train_py_step_with_checkpointing_has_no_syncs_at_any_depth(syncs):
    """train.py's own build (its loader must attach the plan), engine and `train_step`, `--activation_checkpointing
    all`, each depth in a fresh process: 0 syncs in the forward and backward at 2 and 4 layers. The same step with
    the plan taken out of its batches is the control: the counter sees this path's syncs, and they grow with depth."""
    shallow, deep = syncs.train_step_cell(2, "all"), syncs.train_step_cell(4, "all")
    assert (shallow["checkpointed"], deep["checkpointed"]) == (2, 4)  # every layer recomputes in the backward
    assert shallow["step"][0] == 0 and deep["step"][0] == 0, (shallow["step"], deep["step"])
    assert 0 < shallow["without_plan"][0] < deep["without_plan"][0], (shallow, deep)


def test_counter_counts_nested_sync_ops_once(syncs):
    import torch

    x = torch.tensor([0.0, 1.0, 2.0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        x[x > 0].sum()  # one nonzero (inside aten::index)
        bool((x > 1).any())  # is_nonzero -> item -> _local_scalar_dense: one sync
        x.sum().item()  # one
    total, ops = syncs.count_syncs(prof)
    assert total == 3, ops


def test_dpo_step_has_no_syncs(syncs):
    """The DPO loss on a pair batch with its plan: policy forward, the adapter-disabled reference forward (or stored
    log-probs looked up on the device), the per-sequence fused heads and the backward: 0 syncs, checkpointing off and
    on. Control: the same step without the plan."""
    for kind, ckpt in (("dpo", False), ("dpo", True), ("dpo_stored", False)):
        total, ops = syncs.measure(2, kind, ckpt)
        assert total == 0, (kind, ckpt, ops)
    total, ops = syncs.measure(2, "dpo_without_plan")
    assert total > 20 and ops.get("aten::nonzero", 0) > 10, ops


def test_train_py_dpo_step_has_no_syncs(syncs):
    """train.py --stage dpo's own loader (PairDataset's collator with index_plan=True), loss and engine step, in a fresh
    process: 0 syncs in the forward and backward; without the plan the counter sees them."""
    cell = syncs.train_step_cell(2, "all", "dpo")
    assert cell["checkpointed"] == 2
    assert cell["step"][0] == 0, cell["step"]
    assert cell["without_plan"][0] > 20, cell["without_plan"]

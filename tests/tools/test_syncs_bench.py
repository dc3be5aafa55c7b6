"""bench/syncs.py: the training step runs no host-synchronising op; the naive step runs many (the counter is real)."""
import os
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))


@pytest.fixture(scope="module")
def syncs():
    import syncs as bench_syncs

    return bench_syncs


def test_our_step_has_at_most_5_syncs_and_the_naive_one_many(syncs):
    ours, ours_ops = syncs.measure(2, "higgs_ds")
    naive, naive_ops = syncs.measure(2, "naive")
    assert ours <= 5, ours_ops
    assert naive > 20 and naive_ops.get("aten::nonzero", 0) > 10, naive_ops  # boolean indexing is seen


def test_counter_counts_nested_sync_ops_once(syncs):
    import torch

    x = torch.tensor([0.0, 1.0, 2.0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        x[x > 0].sum()  # one nonzero (inside aten::index)
        bool((x > 1).any())  # is_nonzero -> item -> _local_scalar_dense: one sync
        x.sum().item()  # one
    total, ops = syncs.count_syncs(prof)
    assert total == 3, ops

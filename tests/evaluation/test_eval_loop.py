"""Evaluation shards: every rank runs the same number of forwards (ZeRO-3 gathers weights in each), and the counted
batches cover every sample exactly once, whatever the split."""
import pytest

from higgs_ds.evaluation.eval_loop import rank_batches


@pytest.mark.parametrize("n, world, batch", [(1, 2, 2), (3, 2, 2), (5, 2, 2), (7, 3, 2), (4, 2, 1), (2, 4, 3)])
def test_every_rank_runs_as_many_batches_and_counts_each_sample_once(n, world, batch):
    data = list(range(n))
    per_rank = [list(rank_batches(data, list, batch, r, world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # the same number of forwards on every rank
    counted = sorted(x for b in per_rank for items, c in b if c for x in items)
    assert counted == data
    assert all(items == [0] for b in per_rank for items, c in b if not c)  # fillers: sample 0, never counted

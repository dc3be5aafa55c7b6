"""Token-budget sampler: budget respected, disjoint and complete shards, equal counts, determinism, exact resume."""
import itertools

import numpy as np
import pytest

from higgs_ds.data.sampler import TokenBudgetBatchSampler, padding_fraction

LENGTHS = np.random.default_rng(0).lognormal(5, 0.7, size=203).astype(int) + 20


def _ranks(world, seed=1, epoch=0, lengths=LENGTHS, budget=1500):
    samplers = [TokenBudgetBatchSampler(lengths, budget, num_replicas=world, rank=r, seed=seed) for r in range(world)]
    for s in samplers:
        s.set_epoch(epoch)
    return [list(s) for s in samplers]


@pytest.mark.parametrize("world", [1, 2, 8])
def test_shards_are_disjoint_complete_equal_and_within_budget(world):
    per_rank = _ranks(world)
    assert len({len(b) for b in per_rank}) == 1
    flat = [i for batches in per_rank for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))  # every sample exactly once across ranks
    for b in itertools.chain(*per_rank):
        assert LENGTHS[b].max() * len(b) <= 1500 or len(b) == 1


def test_length_bucketing_beats_random_fixed_batches():
    s = TokenBudgetBatchSampler(LENGTHS, 1500, seed=3)
    rnd = np.random.default_rng(0).permutation(len(LENGTHS))
    fixed = [rnd[i:i + 8] for i in range(0, len(rnd), 8)]
    assert s.padding_fraction() < 0.1 < padding_fraction(fixed, LENGTHS)


def test_deterministic_per_seed_and_epoch():
    assert _ranks(2, seed=5, epoch=1) == _ranks(2, seed=5, epoch=1)
    assert _ranks(2, seed=5, epoch=1) != _ranks(2, seed=5, epoch=2)
    assert _ranks(2, seed=5, epoch=1) != _ranks(2, seed=6, epoch=1)


@pytest.mark.parametrize("stop", [0, 1, 7])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(stop):
    a = TokenBudgetBatchSampler(LENGTHS, 1500, num_replicas=2, rank=1, seed=9)
    a.set_epoch(3)
    it = iter(a)
    seen = [next(it) for _ in range(stop)]
    state = a.state_dict()
    b = TokenBudgetBatchSampler(LENGTHS, 1500, num_replicas=2, rank=1, seed=9)
    b.load_state_dict(state)
    b.set_epoch(3)
    rest = list(b)
    full = TokenBudgetBatchSampler(LENGTHS, 1500, 2, 1, seed=9).global_batches(3)[1::2]
    assert seen + rest == full and len(rest) == len(full) - stop
    assert b.state_dict()["consumed"] == len(full)
    assert list(b) == full  # the next pass over the epoch starts from its beginning


def test_resume_refuses_a_different_setup():
    state = TokenBudgetBatchSampler(LENGTHS, 1500, num_replicas=2, seed=9).state_dict()
    with pytest.raises(ValueError, match="num_replicas"):
        TokenBudgetBatchSampler(LENGTHS, 1500, num_replicas=4, seed=9).load_state_dict(state)


def test_fewer_samples_than_ranks_repeats_and_says_so(caplog):
    per_rank = _ranks(8, lengths=np.array([50, 60, 70]), budget=1000)
    assert all(len(b) == 1 for b in per_rank)
    assert sorted({i for b in per_rank for i in b[0]}) == [0, 1, 2]
    assert "repeating 5 batch(es)" in caplog.text


def test_over_budget_sample_gets_its_own_batch(caplog):
    (batches,) = _ranks(1, lengths=np.array([10, 10, 5000, 10]), budget=100)
    assert [2] in batches and "longer than --max_tokens_per_batch" in caplog.text

"""--language_weights: the per-language share of the batches follows the weights (not the data's own mix), the
order is deterministic per seed and epoch and the same on every rank, and a resume mid-epoch gives exactly the
batches an uninterrupted run would have given (fixed batches through resume.SkipSampler, token-budget batches
through the sampler's state)."""
import argparse
import collections
import itertools

import numpy as np
import pytest

from higgs_ds.data.language_mix import LanguageWeightedSampler, language_pools
from higgs_ds.data.resume import SkipSampler
from higgs_ds.data.sampler import TokenBudgetBatchSampler
from higgs_ds.errors import ConfigError
from higgs_ds.languages import parse_language_weights

# the data's own mix: 70 % Vietnamese, 20 % English, 10 % Mandarin (tagged zh-Hans: weighted as zh)
LANGS = ["vi"] * 140 + ["en"] * 40 + ["zh-Hans"] * 20
ORDER = np.random.default_rng(0).permutation(len(LANGS))
LANGS = [LANGS[i] for i in ORDER]
LENGTHS = np.random.default_rng(1).integers(50, 400, size=len(LANGS))
WEIGHTS = parse_language_weights("vi=0.2,en=0.5,zh=0.3")


def _shares(indices):
    """Naive share of each base language among drawn sample indices."""
    counts = collections.Counter(LANGS[i].split("-")[0] for i in indices)
    return {k: v / sum(counts.values()) for k, v in counts.items()}


def _fixed(rank=0, world=1, seed=3, epoch=0):
    s = LanguageWeightedSampler(LANGS, WEIGHTS, world, rank, seed)
    s.set_epoch(epoch)
    return list(s)


def _budget(rank=0, world=1, seed=3, mix=True):
    mix = (language_pools(LANGS, WEIGHTS), WEIGHTS) if mix else None
    return TokenBudgetBatchSampler(LENGTHS, 1200, num_replicas=world, rank=rank, seed=seed, mix=mix)


def test_weights_are_parsed_and_normalised():
    assert WEIGHTS == pytest.approx({"vi": 0.2, "en": 0.5, "zh": 0.3})
    assert parse_language_weights("vi=7,EN=3") == pytest.approx({"vi": 0.7, "en": 0.3})
    for bad, msg in (("vi", "expected TAG=WEIGHT"), ("vi=x", "expected TAG=WEIGHT"), ("viet=1", "not a language"),
                     ("vi=-1", "a weight is a number >= 0"), ("vi=0", "sum to 0")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            parse_language_weights(bad)


def test_a_weighted_language_without_samples_is_refused():
    with pytest.raises(ConfigError, match="names ar but no training sample has that language"):
        language_pools(LANGS, {"vi": 0.5, "ar": 0.5})


def test_share_of_batches_follows_the_weights():
    fixed = [i for epoch in range(10) for i in _fixed(epoch=epoch)]  # 2000 draws
    budget = _budget()
    drawn = [i for epoch in range(10) for b in budget.global_batches(epoch) for i in b]
    unweighted = [i for epoch in range(10) for b in _budget(mix=False).global_batches(epoch) for i in b]
    for indices in (fixed, drawn):
        assert len(indices) == 10 * len(LANGS)
        assert _shares(indices) == pytest.approx(WEIGHTS, abs=0.03)
    assert _shares(unweighted) == pytest.approx({"vi": 0.7, "en": 0.2, "zh": 0.1}, abs=1e-9)  # the data's mix
    # a small language is repeated within an epoch, never more often than its draws need
    counts = collections.Counter(_fixed())
    assert max(counts[i] for i in range(len(LANGS)) if LANGS[i] == "zh-Hans") >= 2


def test_deterministic_and_rank_disjoint():
    assert _fixed(epoch=2) == _fixed(epoch=2) and _fixed(epoch=2) != _fixed(epoch=3)
    assert _fixed(seed=4) != _fixed(seed=3)
    ranks = [_fixed(rank=r, world=4, epoch=1) for r in range(4)]
    whole = _fixed(world=1, epoch=1)
    assert len({len(r) for r in ranks}) == 1
    assert [i for tup in zip(*ranks) for i in tup] == whole  # rank r takes draws r, r + 4, ...


@pytest.mark.parametrize("stop", [0, 5, 37])
def test_fixed_batches_resume_mid_epoch_exactly(stop):
    full = _fixed(rank=1, world=2, epoch=5)
    resumed = SkipSampler(LanguageWeightedSampler(LANGS, WEIGHTS, 2, 1, 3))  # a new process
    resumed.set_epoch(5)
    resumed.skip = stop
    assert list(resumed) == full[stop:]


@pytest.mark.parametrize("stop", [0, 3, 9])
def test_token_budget_batches_resume_mid_epoch_exactly(stop):
    a = _budget(rank=1, world=2)
    a.set_epoch(2)
    seen = list(itertools.islice(iter(a), stop))
    b = _budget(rank=1, world=2)  # a new process
    b.load_state_dict(a.state_dict())
    rest = list(b)
    full = _budget(rank=1, world=2).global_batches(2)[1::2]
    assert seen + rest == full and len(rest) == len(full) - stop

"""`--language_weights vi=0.7,en=0.3`: each epoch's samples drawn so that the languages follow the weights.

An epoch still has one draw per sample. Each draw picks a language with its weight (seeded by (seed, epoch)), then
that language's next sample from its own seeded shuffle, reshuffled when used up: a small language is repeated, a
large one is partly left for later epochs. The order depends only on (seed, epoch), so every rank computes the
same one and a resumed run skips exactly what it had consumed (resume.py, sampler.py).
"""
import logging

import numpy as np
from torch.utils.data import Sampler

from ..errors import ConfigError
from ..languages import base_language

log = logging.getLogger(__name__)


def language_pools(languages, weights):
    """{language: indices of its samples (same base language)} for the weighted languages; ConfigError for a
    weighted language with no sample; samples of unweighted languages (or none) are never drawn (logged)."""
    bases = [base_language(x) for x in languages]  # "zh=0.5" takes zh-Hant and cmn samples too
    pools = {lang: np.flatnonzero([b == base_language(lang) for b in bases]) for lang in weights}
    empty = [lang for lang, idx in pools.items() if weights[lang] > 0 and idx.size == 0]
    if empty:
        present = sorted({str(x) for x in languages})
        raise ConfigError(f"--language_weights names {', '.join(empty)} but no training sample has that language "
                          f"(the data has: {', '.join(present)})")
    left = len(languages) - sum(idx.size for idx in pools.values())
    if left:
        log.warning("--language_weights: %d samples have a language with no weight and are never drawn", left)
    return {lang: idx for lang, idx in pools.items() if weights[lang] > 0}


def weighted_order(pools, weights, num_draws, seed, epoch):
    """`num_draws` sample indices for `epoch`: a language per draw by weight, its samples in seeded shuffles."""
    rng = np.random.default_rng([seed, epoch, 1])
    langs = sorted(pools)
    p = np.asarray([weights[lang] for lang in langs])
    picks = rng.choice(len(langs), size=num_draws, p=p / p.sum())
    out = np.empty(num_draws, dtype=np.int64)
    for k, lang in enumerate(langs):
        where = np.flatnonzero(picks == k)
        pool = pools[lang]
        rounds = -(-where.size // pool.size)  # whole shuffles needed
        seq = np.concatenate([rng.permutation(pool) for _ in range(rounds)]) if rounds else pool[:0]
        out[where] = seq[:where.size]
    return out


class LanguageWeightedSampler(Sampler):
    """The fixed-batch `DistributedSampler` with language weights: one draw per sample per epoch (padded to a
    multiple of `num_replicas` by wrapping), rank r takes draws r, r + num_replicas, ..."""

    def __init__(self, languages, weights, num_replicas=1, rank=0, seed=0):
        self.pools, self.weights = language_pools(languages, weights), weights
        self.n, self.num_replicas, self.rank, self.seed, self.epoch = len(languages), num_replicas, rank, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.n // self.num_replicas)

    def __iter__(self):
        order = weighted_order(self.pools, self.weights, len(self) * self.num_replicas, self.seed, self.epoch)
        return iter(order[self.rank::self.num_replicas].tolist())


def dataset_mix(dataset, weights):
    """(pools, weights) of a dataset's sample languages (its `languages`), for the samplers; None without weights."""
    return (language_pools(dataset.languages, weights), weights) if weights else None

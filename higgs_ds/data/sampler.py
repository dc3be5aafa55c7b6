"""Token-budget batching: length-bucketed micro-batches of at most `max_tokens_per_batch` padded tokens.

Every rank computes the same global batch list from (seed, epoch) and takes every `num_replicas`-th batch, so
shards are disjoint and complete. Ranks get equal batch counts by splitting the largest batches; only when that is
impossible (fewer samples than ranks) are batches repeated, with a warning. `state_dict()` / `load_state_dict()`
resume mid-epoch with exactly the remaining batches.
"""
import logging

import numpy as np

log = logging.getLogger(__name__)


def padding_fraction(batches, lengths):
    """Fraction of the padded token grid (batch size x longest sample, summed over batches) that is padding."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    grid = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / grid if grid else 0.0


def pack_by_length(order, lengths, max_tokens):
    """Greedy packing of `order` (sorted by length) into batches whose size x max length stays within budget."""
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, int(lengths[i]))
        if cur and new_max * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, new_max = [], int(lengths[i])
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


class TokenBudgetBatchSampler:
    """A `batch_sampler` for `DataLoader`: this rank's batches of dataset indices for the current epoch."""

    def __init__(self, lengths, max_tokens_per_batch, num_replicas=1, rank=0, seed=0, shuffle=True, mix=None):
        """`mix`: (pools, weights) of --language_weights (language_mix.py): the epoch's samples are drawn by
        language weight (with repeats) before length bucketing."""
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.num_replicas, self.rank = int(max_tokens_per_batch), num_replicas, rank
        self.seed, self.shuffle, self.mix = seed, shuffle, mix
        self.epoch, self.consumed, self._skip = 0, 0, 0
        self.num_repeated = 0
        over = int((self.lengths > self.max_tokens).sum())
        if over:
            log.warning("%d samples are longer than --max_tokens_per_batch %d: each gets a batch of its own",
                        over, self.max_tokens)

    @classmethod
    def for_dataset(cls, dataset, max_tokens_per_batch, **kwargs):
        """Lengths from the dataset's `lengths` column when it has one (a prepared dir), else `num_tokens(i)`."""
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            lengths = [dataset.num_tokens(i) for i in range(len(dataset))]
        return cls(lengths, max_tokens_per_batch, **kwargs)

    def global_batches(self, epoch=None):
        """All ranks' batches for `epoch`, in order; rank r takes batches r, r + num_replicas, ..."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        if self.mix is not None:
            from .language_mix import weighted_order

            order = weighted_order(*self.mix, len(self.lengths), self.seed, epoch)
        else:
            order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = order[np.argsort(self.lengths[order], kind="stable")]  # by length; ties in random order
        batches = pack_by_length(order, self.lengths, self.max_tokens)
        batches = self._even_out(batches)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _even_out(self, batches):
        """Make the batch count a multiple of num_replicas: split the largest batches, else repeat some."""
        while batches and len(batches) % self.num_replicas:
            big = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[big]) < 2:
                break
            b = batches.pop(big)
            batches[big:big] = [b[: len(b) // 2], b[len(b) // 2:]]
        missing = -len(batches) % self.num_replicas
        if missing and missing != self.num_repeated:
            log.warning("only %d samples for %d ranks: repeating %d batch(es) so every rank gets the same count",
                        len(self.lengths), self.num_replicas, missing)
        self.num_repeated = missing
        return batches + [list(batches[i % len(batches)]) for i in range(missing)] if batches else batches

    def _my_batches(self):
        return self.global_batches()[self.rank::self.num_replicas]

    def __len__(self):
        return len(self._my_batches())

    def __iter__(self):
        batches, skip = self._my_batches(), self._skip
        self._skip, self.consumed = 0, skip
        for batch in batches[skip:]:
            self.consumed += 1
            yield batch

    def set_epoch(self, epoch):
        self.epoch = epoch

    def padding_fraction(self, epoch=None):
        return padding_fraction(self.global_batches(epoch), self.lengths)

    def state_dict(self):
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "num_replicas": self.num_replicas, "num_samples": len(self.lengths)}

    def load_state_dict(self, state):
        """Resume: the next iteration yields this rank's remaining batches of `state['epoch']`."""
        for k in ("seed", "num_replicas", "num_samples"):
            mine = self.state_dict()[k]
            if state[k] != mine:
                raise ValueError(f"sampler state has {k}={state[k]}, this run {mine}: cannot resume exactly")
        self.epoch, self._skip, self.consumed = state["epoch"], state["consumed"], state["consumed"]

"""What every evaluation loop over a set shares: the model in eval mode without gradients (`evaluating`), and each
rank's share of the set in batches, padded so that every rank runs the same number of forwards (`rank_batches`).

Rank r takes samples r, r + world, ... (no duplicates, unlike `DistributedSampler`); a rank with fewer batches than
rank 0 then runs uncounted filler batches (sample 0) until it has as many. Under ZeRO-3 each forward all-gathers the
weights with every rank, so a rank that went on to the final all-reduce early would leave the others waiting in a
gather until the distributed timeout.
"""
import contextlib
import math

import torch


@contextlib.contextmanager
def evaluating(model):
    """`model` in eval mode under `torch.no_grad()`; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def rank_batches(dataset, collate, batch_size, rank=0, world=1):
    """(batch, counted) pairs: this rank's batches, then uncounted fillers up to rank 0's batch count (the most any
    rank has)."""
    from torch.utils.data import DataLoader, Subset

    most = math.ceil(math.ceil(len(dataset) / world) / batch_size)
    mine = 0
    for batch in DataLoader(Subset(dataset, range(rank, len(dataset), world)), batch_size=batch_size,
                            collate_fn=collate):
        mine += 1
        yield batch, True
    filler = collate([dataset[0]]) if mine < most else None
    for _ in range(most - mine):
        yield filler, False

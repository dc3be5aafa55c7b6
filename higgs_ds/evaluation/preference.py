"""Preference metrics over a set of pairs (the held-out evaluation during DPO) and the reference log-probs stored before DPO.

Each rank scores every world-th pair (as teacher_forced.py does; fillers keep every rank's forward count equal,
eval_loop.py) and the sums are all-reduced: the numbers are the means over all pairs, whatever the world size
and batch size.
"""
import torch

from ..data.loaders import to_device
from ..data.pairs import PairCollator
from ..engine.distributed import all_reduce_sum
from ..loss.hidden import base_higgs_model
from ..loss.preference import preference_loss, sequence_logps, stored_reference
from .eval_loop import evaluating

PAIR_MEANS = ("pref/loss", "pref/accuracy", "pref/margin", "pref/reward_chosen", "pref/reward_rejected",
              "pref/logp_chosen", "pref/logp_rejected", "loss/total")


def pair_batches(dataset, model, batch_size, rank=0, world=1):
    """(batch, counted) pairs of this rank's share of the pairs (pairs rank, rank + world, ...), padded to every
    rank's forward count."""
    from .eval_loop import rank_batches

    return rank_batches(dataset, PairCollator(base_higgs_model(model).config, index_plan=True), batch_size, rank, world)


def reference_table(model, dataset, batch_size, rank=0, world=1, chunk_size=None):
    """(pairs, 2) float64 log-probs (chosen, rejected) of every pair under `model` as it is now."""
    table = torch.zeros(len(dataset), 2, dtype=torch.float64)

    with evaluating(model):
        for batch, counted in pair_batches(dataset, model, batch_size, rank, world):
            logps = sequence_logps(model, to_device(batch, model.device), chunk_size)[0].double().cpu()
            if counted:
                table[batch["pair_index"]] = logps.view(2, -1).t()
    return all_reduce_sum(table)


def preference_eval(model, dataset, batch_size, config, table=None, rank=0, world=1):
    """Means over all pairs of `PAIR_MEANS` and the chosen audio CE per labelled code (`loss/audio`), "pairs".
    `table`: stored reference log-probs; None = the adapter-disabled model."""
    sums = torch.zeros(len(PAIR_MEANS) + 3, dtype=torch.float64)

    with evaluating(model):
        for batch, counted in pair_batches(dataset, model, batch_size, rank, world):
            batch = to_device(batch, model.device)
            ref = stored_reference(table, batch) if table is not None else None
            out = preference_loss(model, batch, config, ref)
            if not counted:
                continue
            n = batch["pair_index"].numel()
            means = [float(out.metrics[k]) * n for k in PAIR_MEANS]
            sums[: len(PAIR_MEANS)] += torch.tensor(means, dtype=torch.float64)
            chosen_codes = float(out.metrics["tokens/chosen"])
            sums[-3:] += torch.tensor([float(out.metrics["loss/audio"]) * chosen_codes, chosen_codes, n],
                                      dtype=torch.float64)
    s = all_reduce_sum(sums).tolist()
    pairs = max(s[-1], 1)
    return {**{k: v / pairs for k, v in zip(PAIR_MEANS, s)}, "loss/audio": s[-3] / max(s[-2], 1), "pairs": int(s[-1])}

"""The one teacher-forced evaluation, used by train.py (`--eval_every`, end of training) and `higgs-ds evaluate`.

Token-weighted over the whole set: every labelled token counts once, whatever batch it fell into (a mean of
per-batch means would weight a short batch's tokens more). Each rank evaluates every world-th sample (no
padding duplicates, unlike `DistributedSampler`) and the sums are all-reduced, so the result is independent of
the world size and the batch size up to float rounding.

Every rank runs the same number of forwards whatever the split (eval_loop.py: ZeRO-3 gathers the weights in
every forward).
"""
import dataclasses
import logging

import torch

log = logging.getLogger(__name__)

SUM_KEYS = ("text_ce", "text_n", "audio_ce", "audio_n")


def eval_batches(dataset, config, batch_size, rank=0, world=1):
    """(batch, counted) pairs of this rank's share, padded to every rank's forward count (eval_loop.py)."""
    from ..data.collate import TrainingCollator
    from .eval_loop import rank_batches

    collate = TrainingCollator(config, getattr(dataset, "whisper_processor", None))
    return rank_batches(dataset, collate, batch_size, rank, world)


def _accumulate(sums, m, k):
    n_t, n_a = float(m["tokens/text"]), float(m["tokens/audio"])
    sums[0] += float(m["loss/text"]) * n_t
    sums[1] += n_t
    sums[2] += float(m["loss/audio"]) * n_a
    sums[3] += n_a
    for c in range(k):  # the codebooks are labelled at the same columns: n_a / k tokens each
        sums[4 + c] += float(m[f"loss/audio_cb{c}"]) * n_a / k
        sums[4 + k + c] += float(m[f"acc/audio_cb{c}"]) * n_a / k


@torch.no_grad()
def teacher_forced_eval(model, dataset, batch_size, loss_cfg=None, rank=0, world=1, device=None):
    """{"loss/text", "loss/audio", "loss/total", "loss/audio_cb{c}", "acc/audio_cb{c}", "acc/audio",
    "tokens/text", "tokens/audio", "samples"}. `model`: bare, peft or a DeepSpeed engine (its mode is restored)."""
    from ..data.loaders import to_device
    from ..engine.distributed import all_reduce_sum
    from ..loss import LossConfig, compute_loss
    from ..loss.hidden import base_higgs_model
    from .eval_loop import evaluating

    cfg = dataclasses.replace(loss_cfg or LossConfig(), normalization="local")
    config = base_higgs_model(model).config
    k = config.audio_num_codebooks
    device = device or next(model.parameters()).device
    sums = torch.zeros(4 + 2 * k + 1, dtype=torch.float64)
    with evaluating(model):
        for batch, counted in eval_batches(dataset, config, batch_size, rank, world):
            metrics = compute_loss(model, to_device(batch, device), cfg).metrics
            if counted:
                _accumulate(sums, metrics, k)
                sums[-1] += batch["input_ids"].shape[0]
    s = all_reduce_sum(sums).tolist()
    text, audio = s[0] / max(s[1], 1), s[2] / max(s[3], 1)
    per_cb = max(s[3] / k, 1)
    out = {"loss/text": text, "loss/audio": audio, "tokens/text": int(s[1]), "tokens/audio": int(s[3]),
           "loss/total": cfg.text_loss_weight * text + cfg.audio_loss_weight * audio, "samples": int(s[-1])}
    for c in range(k):
        out[f"loss/audio_cb{c}"] = s[4 + c] / per_cb
        out[f"acc/audio_cb{c}"] = s[4 + k + c] / per_cb
    out["acc/audio"] = sum(s[4 + k:4 + 2 * k]) / max(s[3], 1)
    return out


def report(val, step, meter):
    """Write `val` to every sink (eval/...) and the log; returns it."""
    meter.write(val, step, "eval/")
    log.info("eval at step %d: loss %.4f | text %.4f | audio %.4f", step, val["loss/total"], val["loss/text"],
             val["loss/audio"])
    return val

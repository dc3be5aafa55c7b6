"""The training objective from hidden states: text CE at labeled positions + per-codebook audio CE.

Alignment (`data/alignment.py`): text logits at t are scored against `expanded_labels[t + 1]`;
audio column t against column t + 1 of the same clip. Only rows with at least one labeled target reach
the heads, through `fused.fused_linear_ce`, so full-vocab logits never exist.

Normalisation (`LossConfig.normalization`):
- "local" (default, the convention of the reference loss in tests/loss/reference_loss.py): text = sum of CE /
  labeled text tokens of this micro-batch;
  audio = sum over labeled (codebook, column) pairs of w_k * CE / number of such pairs. With the default
  all-ones `codebook_weights` this is the plain mean; with others (rescaled to mean 1) it is the w-weighted
  mean of per-codebook means, since every codebook of a clip has the same number of labels (T codes + EOS).
  A micro-batch's mean is not the mean of the step when micro-batches or ranks hold different token counts.
- "global": the same sums divided by `Denominators` passed in (see `normalize.global_denominators`: labeled
  counts summed over the step's micro-batches and all-reduced across data-parallel ranks, pre-divided by what
  DeepSpeed averages over), so the applied gradient is exactly that of the mean over every labeled token of
  the optimizer step, whatever the split.
Metrics are always this micro-batch's means (keys as in the reference `plain_loss`).
"""
import dataclasses
from typing import Optional, Sequence

import torch

from ..config import option
from ..data.alignment import IGNORE, audio_rows, text_rows
from .fused import fused_linear_ce
from .hidden import call_with_weight


@dataclasses.dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict  # 0-d tensors: loss/text, loss/audio, loss/audio_cb{k}, acc/audio_cb{k}, tokens/*, loss/total


@dataclasses.dataclass
class LossConfig:
    """The objective (docs/LOSS.md). The dataclass default normalization is "local"; the flag's is "global"."""
    text_loss_weight: float = option(1.0, "weight of the text CE term")
    audio_loss_weight: float = option(1.0, "weight of the audio CE term")
    codebook_weights: Optional[Sequence[float]] = option(None, "one weight per codebook (rescaled to mean 1)",
                                                         type=float, nargs="+")
    label_smoothing: float = option(0.0, "label smoothing of both CE terms")
    z_loss: float = option(0.0, "coefficient of logsumexp^2 per labeled target")
    chunk_size: Optional[int] = None  # rows of logits per chunk; None = about 4M logits (16 MiB fp32) per chunk
    normalization: str = option("local", "global: divide by the labeled-token count of the whole optimizer step "
                                          "over all ranks (exact under accumulation and data parallelism); local: "
                                          "per micro-batch mean", flag="loss_normalization", flag_default="global",
                                choices=("global", "local"))


@dataclasses.dataclass
class Denominators:
    """What the text and audio CE sums are divided by in "global" mode (floats or 0-d tensors)."""
    text: float
    audio: float


def _codebook_weights(config, k, device):
    if config.codebook_weights is None:
        return torch.ones(k, device=device)
    w = torch.as_tensor(list(config.codebook_weights), dtype=torch.float32)  # checked on the host
    if w.numel() != k or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"codebook_weights must be {k} non-negative numbers with a positive sum, got {w.tolist()}")
    return (w * (k / w.sum())).to(device, non_blocking=True)


def _head_ce(head, h, targets, scale, n_groups, config):
    """`fused_linear_ce` of `h` against a head given as its weight, or as its module (run inside the module's call,
    so DeepSpeed ZeRO-3 gathers the partitioned weight: `hidden.call_with_weight`)."""
    eps, zl, chunk = config.label_smoothing, config.z_loss, config.chunk_size
    if isinstance(head, torch.nn.Module):
        return call_with_weight(head, lambda w, x: fused_linear_ce(x, w, targets, scale, n_groups, eps, zl, chunk), h)
    return fused_linear_ce(h, head, targets, scale, n_groups, eps, zl, chunk)


def _rows(hidden, flat_positions):
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat_positions)


def _denominator(config, denominators, name, local_count):
    if config.normalization == "local":
        return local_count.clamp(min=1).float()
    if config.normalization != "global":
        raise ValueError(f"normalization must be 'local' or 'global', got {config.normalization!r}")
    if denominators is None:
        raise ValueError("normalization='global' needs Denominators (see higgs_ds.loss.normalize)")
    value = getattr(denominators, name)
    if torch.is_tensor(value):
        return value.to(device=local_count.device, dtype=torch.float32)
    return float(value)  # a Python number divides on the device without a host-to-device copy


def fused_head_loss(hidden, outputs, batch, text_w, audio_w, n_codebooks, config, denominators=None, rows=None):
    """`LossOutput` from the hidden states (B, T, H), the forward's outputs and the collated batch. `text_w` and
    `audio_w`: the heads' weights, or their modules (required under ZeRO-3, see `_head_ce`).

    `rows`: (text positions, text targets, audio positions, audio targets, n_text, per-codebook audio counts) as
    computed on the host (`data.index_plan.IndexPlan.loss_rows`); None finds them here (`nonzero`: host syncs)."""
    dev = hidden.device
    if rows is None:
        t_pos, t_tgt = text_rows(outputs.expanded_labels, hidden.shape[:2], dev)
        a_pos, a_tgt = audio_rows(outputs.audio_out_mask, batch.get("label_audio_ids"),
                                  batch.get("audio_out_ids_start"), n_codebooks, dev)
        n_text, n_k = torch.tensor(t_pos.numel(), device=dev), None
    else:
        t_pos, t_tgt, a_pos, a_tgt, n_text, n_k = rows
    # one gather (and so one B x T x H gradient buffer) for both heads
    h_text, h_audio = _rows(hidden, torch.cat([t_pos, a_pos])).split([t_pos.numel(), a_pos.numel()])

    t_scale = torch.ones_like(t_tgt, dtype=torch.float32) / _denominator(config, denominators, "text", n_text)
    text_loss, text_ce, _ = _head_ce(text_w, h_text, t_tgt, t_scale, 1, config)

    valid = a_tgt != IGNORE
    n_k = valid.sum(0) if n_k is None else n_k
    n_audio = n_k.sum()
    cb_w = _codebook_weights(config, n_codebooks, dev)
    a_scale = valid * cb_w / _denominator(config, denominators, "audio", n_audio)
    audio_loss, ce_k, correct_k = _head_ce(audio_w, h_audio, a_tgt, a_scale, n_codebooks, config)

    loss = config.text_loss_weight * text_loss + config.audio_loss_weight * audio_loss
    metrics = {"loss/text": text_ce[0] / n_text.clamp(min=1),
               "loss/audio": (cb_w * ce_k).sum() / n_audio.clamp(min=1)}
    for k in range(n_codebooks):
        metrics[f"loss/audio_cb{k}"] = ce_k[k] / n_k[k].clamp(min=1)
        metrics[f"acc/audio_cb{k}"] = correct_k[k].float() / n_k[k].clamp(min=1)
    # loss/total is the micro-batch mean in every normalisation mode (the optimised `loss` may be scaled)
    total = config.text_loss_weight * metrics["loss/text"] + config.audio_loss_weight * metrics["loss/audio"]
    metrics.update({"tokens/text": n_text, "tokens/audio": n_audio, "loss/total": total.detach()})
    return LossOutput(loss, metrics)

"""Label alignment: what each position's logits are scored against.

Text: the logits at position t predict `expanded_labels[t + 1]` (standard causal shift).
Audio: the collator puts labels at the *same* column as the input code, so the logits at audio column t predict
the label at column t + 1 **of the same clip**; the last column of every clip predicts nothing. Scoring column t
against label t would train the copy task (near-zero loss, silent output) — see docs/LOSS.md.
`text_rows` / `audio_rows`: the positions that carry a target, and their targets, as the loss gathers them (the
collator's host-side plan computes them once per batch, data/index_plan.py).
"""
import torch

from ..constants import IGNORE_INDEX as IGNORE


def text_targets(expanded_labels):
    """(B, T) targets for the logits at each position: the next label, -100 at the last position."""
    tgt = torch.full_like(expanded_labels, IGNORE)
    tgt[:, :-1] = expanded_labels[:, 1:]
    return tgt


def audio_targets(label_audio_ids, audio_out_ids_start):
    """(K, N) targets for the audio logits at each audio-out column: the next column's label within the clip."""
    tgt = torch.full_like(label_audio_ids, IGNORE)
    if label_audio_ids.shape[1] == 0:
        return tgt
    tgt[:, :-1] = label_audio_ids[:, 1:]
    clip_last = audio_out_ids_start[1:] - 1  # the column before each next clip starts ends a clip
    tgt[:, clip_last[clip_last >= 0]] = IGNORE
    return tgt


def text_rows(expanded_labels, shape, device):
    """(flat positions, targets) of the text positions whose next label is not -100."""
    if expanded_labels is None:
        expanded_labels = torch.full(shape, IGNORE, dtype=torch.long, device=device)
    tgt = text_targets(expanded_labels).reshape(-1)
    pos = (tgt != IGNORE).nonzero().squeeze(1)
    return pos, tgt.index_select(0, pos)


def audio_rows(audio_out_mask, label_audio_ids, audio_out_ids_start, n_codebooks, device):
    """(flat positions, (N, K) targets) of the audio-out columns with at least one labeled codebook."""
    positions = audio_out_mask.reshape(-1).nonzero().squeeze(1) if audio_out_mask is not None \
        else torch.zeros(0, dtype=torch.long, device=device)
    if label_audio_ids is None:
        tgt = torch.full((positions.numel(), n_codebooks), IGNORE, dtype=torch.long, device=device)
    else:
        if label_audio_ids.shape != (n_codebooks, positions.numel()):
            raise ValueError(f"label_audio_ids {tuple(label_audio_ids.shape)} does not match {n_codebooks} "
                             f"codebooks x {positions.numel()} audio-out positions")
        tgt = audio_targets(label_audio_ids.to(device), audio_out_ids_start.to(device)).t()
    keep = (tgt != IGNORE).any(1).nonzero().squeeze(1)
    return positions.index_select(0, keep), tgt.index_select(0, keep)

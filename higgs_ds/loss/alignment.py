"""Label alignment: what each position's logits are scored against.

Text: the logits at position t predict `expanded_labels[t + 1]` (standard causal shift).
Audio: the collator puts labels at the *same* column as the input code, so the logits at audio column t predict
the label at column t + 1 **of the same clip**; the last column of every clip predicts nothing. Scoring column t
against label t would train the copy task (near-zero loss, silent output) — see docs/LOSS.md.
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

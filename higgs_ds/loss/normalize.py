"""Global normalisation: labeled-token counts of a whole optimizer step, without running the model.

`count_labeled(batch, audio_out_token_id)` counts what the loss will score in one collated micro-batch: text
tokens whose label is not -100 (the `<|AUDIO_OUT|>` placeholders are expanded into audio columns and never
scored as text; the first column has no predecessor) and labeled (codebook, column) audio pairs after the
within-clip shift. `global_denominators` sums these over the step's micro-batches, all-reduces them across the
data-parallel group, and divides out what DeepSpeed averages over (loss / gradient_accumulation_steps in
`engine.backward`, gradients averaged over ranks), so the applied gradient is that of the step's exact mean.
"""
import torch
import torch.distributed as dist

from ..data.alignment import IGNORE, audio_targets
from .objective import Denominators


def count_labeled(batch, audio_out_token_id):
    """(text, audio) labeled counts of a collated batch, as long tensors."""
    labels, ids = batch.get("label_ids"), batch["input_ids"]
    n_text = torch.zeros((), dtype=torch.long)
    if labels is not None:
        n_text = ((labels != IGNORE) & (ids != audio_out_token_id))[:, 1:].sum().cpu()
    n_audio = torch.zeros((), dtype=torch.long)
    if batch.get("label_audio_ids") is not None:
        n_audio = (audio_targets(batch["label_audio_ids"], batch["audio_out_ids_start"]) != IGNORE).sum().cpu()
    return n_text, n_audio


def global_denominators(counts, gradient_accumulation_steps=1, averaged_over_ranks=True, group=None,
                        device=None):
    """`Denominators` from this rank's per-micro-batch (text, audio) counts of one optimizer step.

    Pass `gradient_accumulation_steps` = the engine's (it divides each micro-batch loss by it) and
    `averaged_over_ranks=True` when gradients are averaged (not summed) across the data-parallel group.
    """
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for n_text, n_audio in counts:
        total += torch.tensor([float(n_text), float(n_audio)], dtype=torch.float64, device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        world = dist.get_world_size(group) if averaged_over_ranks else 1
    total = total.clamp(min=1) / (world * gradient_accumulation_steps)
    return Denominators(text=float(total[0]), audio=float(total[1]))

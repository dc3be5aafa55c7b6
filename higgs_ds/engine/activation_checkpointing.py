"""Activation checkpointing of the decoder layers of `HiggsAudioModel`.

`HiggsAudioModel._forward_core` calls each of `self.layers` in a plain loop (its
`num_activation_checkpointing_layers` is unused, HF `gradient_checkpointing_enable()` does not apply), so
each selected layer's `forward` is replaced by one that runs the original under
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` while training with grad enabled: the layer's
activations are dropped after the forward and recomputed in the backward. Inference is unchanged. The
recomputation runs in a copy of the forward's `contextvars` context, so it sees what the forward saw (the
sync-free forward's index plan, models/sync_free.py).
"""
import contextvars
import dataclasses
import functools
import logging

import torch.utils.checkpoint

from ..config import option

log = logging.getLogger(__name__)
MODES = ("off", "all", "every_k")


@dataclasses.dataclass
class ActivationCheckpointingConfig:
    activation_checkpointing: str = option("off", "recompute decoder-layer activations in the backward: all layers, "
                                                  "or every k-th (less memory, ~1/3 more compute per checkpointed "
                                                  "layer)", choices=MODES)
    checkpoint_every_k: int = option(2, "with --activation_checkpointing every_k: checkpoint layers 0, k, 2k, ...",
                                     minimum=1)

    def apply(self, model):
        """Wrap the chosen layers; returns the fraction of decoder layers recomputed in the backward."""
        chosen = enable_activation_checkpointing(model, self.activation_checkpointing, self.checkpoint_every_k)
        from ..models.unwrap import base_higgs_model

        return len(chosen) / len(base_higgs_model(model).layers)


def _checkpointed(layer, forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if layer.training and torch.is_grad_enabled():
            context = contextvars.copy_context()
            return torch.utils.checkpoint.checkpoint(context.run, forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    run.higgs_ds_checkpointed = True
    return run


def enable_activation_checkpointing(model, mode="all", every_k=1):
    """Checkpoint every decoder layer (`all`) or layers 0, k, 2k, ... (`every_k`). Returns the wrapped indices."""
    if mode not in MODES:
        raise ValueError(f"activation checkpointing mode must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return []
    if every_k < 1:
        raise ValueError(f"checkpoint_every_k must be >= 1, got {every_k}")
    from ..models.unwrap import base_higgs_model

    layers = base_higgs_model(model).layers
    chosen = [i for i in range(len(layers)) if mode == "all" or i % every_k == 0]
    for i in chosen:
        layer = layers[i]
        if not getattr(layer.forward, "higgs_ds_checkpointed", False):
            layer.forward = _checkpointed(layer, layer.forward)
    log.info("activation checkpointing on %d of %d decoder layers", len(chosen), len(layers))
    return chosen

"""Activation checkpointing of the decoder layers of `HiggsAudioModel`: which layers, from the flags.

`HiggsAudioModel._forward_core` calls each of `self.layers` in a plain loop (its `num_activation_checkpointing_layers`
is unused, HF `gradient_checkpointing_enable()` does not apply). The chosen layers are handed to the training
forward (`models/training_forward.checkpoint_layers`), which runs them under `torch.utils.checkpoint.checkpoint(...,
use_reentrant=False)` while training with grad enabled, whatever the order of setup: the layer's activations are
dropped after the forward and recomputed in the backward. Inference is unchanged.
"""
import dataclasses
import logging

from ..config import option
from ..models.training_forward import checkpoint_layers
from ..models.unwrap import base_higgs_model

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
        """Checkpoint the chosen layers of `model`; returns their indices."""
        return enable_activation_checkpointing(model, self.activation_checkpointing, self.checkpoint_every_k)

    def recompute_fraction(self, num_layers):
        """The fraction of `num_layers` decoder layers whose forward runs twice (MFU's FLOPs per token)."""
        if self.activation_checkpointing == "off":
            return 0.0
        step = 1 if self.activation_checkpointing == "all" else self.checkpoint_every_k
        return len(range(0, num_layers, step)) / num_layers


def enable_activation_checkpointing(model, mode="all", every_k=1):
    """Checkpoint every decoder layer (`all`) or layers 0, k, 2k, ... (`every_k`). Returns the wrapped indices."""
    if mode not in MODES:
        raise ValueError(f"activation checkpointing mode must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return []
    if every_k < 1:
        raise ValueError(f"checkpoint_every_k must be >= 1, got {every_k}")
    layers = base_higgs_model(model).layers
    chosen = [i for i in range(len(layers)) if mode == "all" or i % every_k == 0]
    checkpoint_layers(model, chosen)
    log.info("activation checkpointing on %d of %d decoder layers", len(chosen), len(layers))
    return chosen

"""Losses for Higgs Audio training: text CE with a causal shift, per-codebook audio CE shifted within each clip."""
from .alignment import audio_targets, text_targets  # noqa: F401
from .plain import LossOutput, plain_loss  # noqa: F401

"""Losses for Higgs Audio training: text CE with a causal shift, per-codebook audio CE shifted within each clip.

`compute_loss(model, batch, config)` is the training entry point: one forward that stops at the final hidden
states (`models/training_forward.py`), then the chunked fused head + cross-entropy (`objective.py`, `fused.py`);
full-vocab logits never exist. The plain reference (full logits + `F.cross_entropy`) lives in
tests/loss/reference_loss.py.
"""
from ..data.alignment import audio_targets, text_targets  # noqa: F401
from ..models.training_forward import INDEX_PLAN_KEY, final_hidden_states, hidden_states_only
from ..models.unwrap import base_higgs_model  # noqa: F401
from .hidden import head_modules, head_weights, model_codebooks
from .normalize import count_labeled, global_denominators  # noqa: F401
from .objective import Denominators, LossConfig, LossOutput, fused_head_loss


def compute_loss(model, batch, config=None, denominators=None):
    """`LossOutput` for a collated batch (keyword args of `HiggsAudioModel.forward`, already on device).

    `model` is the bare model, a peft `PeftModel` or a DeepSpeed engine; it is called as `model(**batch)` so
    engine hooks run. `denominators` is required when `config.normalization == "global"`. A batch holding a
    `IndexPlan` (`data/index_plan.py`, under `INDEX_PLAN_KEY`) runs the forward and the loss without host syncs.
    """
    config = config or LossConfig()
    text_head, audio_head = head_modules(model)  # modules, not weights: ZeRO-3 gathers them in their own call
    n_codebooks, _ = model_codebooks(model)
    outputs = final_hidden_states(model, batch)
    plan = batch.get(INDEX_PLAN_KEY)
    rows = plan.loss_rows() if plan is not None else None
    return fused_head_loss(outputs.logits, outputs, batch, text_head, audio_head, n_codebooks, config, denominators,
                           rows)


__all__ = ["compute_loss", "LossConfig", "Denominators", "LossOutput", "fused_head_loss",
           "hidden_states_only", "head_weights", "head_modules", "base_higgs_model", "count_labeled",
           "global_denominators", "audio_targets", "text_targets"]

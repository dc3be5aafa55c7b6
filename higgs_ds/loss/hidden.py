"""The heads the fused loss applies to the final hidden states (models/training_forward.py gives those states).

`head_modules(model)` / `head_weights(model)` find the text and audio heads that run (a peft `modules_to_save`
wrapper's active copy); `model` may be the bare model, a peft `PeftModel`, or a DeepSpeed engine (`.module`).
Under ZeRO-3 a head's weight is partitioned (empty) outside its module's forward: `call_with_weight` runs the loss
as the head module's forward, so ZeRO-3's own module hooks gather the weight for the forward and again for the
backward, where the head's gradient accumulates into the gathered parameter and ZeRO-3 reduces and partitions it.
"""
from ..models.training_forward import require_plain_heads, run_as_forward
from ..models.unwrap import base_higgs_model


def _active(module):
    """The module that actually runs: a peft `modules_to_save` wrapper's active copy, else the module itself."""
    if hasattr(module, "modules_to_save") and hasattr(module, "original_module"):
        if getattr(module, "disable_adapters", False) or not module.active_adapters:
            return module.original_module
        return module.modules_to_save[module.active_adapters[0]]
    return module


def head_weights(model):
    """(text_lm_head.weight (V, H), audio_lm_head.weight (K*C, H)) of the heads that run, trainable or not."""
    text_head, audio_head = head_modules(model)
    text_w, audio_w = text_head.weight, audio_head.weight
    for name, w in (("text_lm_head", text_w), ("audio_lm_head", audio_w)):
        if w.dim() != 2 or w.numel() == 0:
            raise RuntimeError(f"{name}.weight has shape {tuple(w.shape)}: partitioned (ZeRO-3?) weights are "
                               "not supported by the fused loss")
    return text_w, audio_w


def head_modules(model):
    """(text_lm_head, audio_lm_head) modules that run (a peft `modules_to_save` wrapper's active copy)."""
    base = base_higgs_model(model)
    require_plain_heads(base)
    proj = _active(base.audio_decoder_proj)
    return _active(proj.text_lm_head), _active(proj.audio_lm_head)


def call_with_weight(module, fn, *args):
    """`fn(module.weight, *args)` run as `module`'s forward (through `module.__call__` and so its hooks: under
    ZeRO-3 the weight is gathered for it and for its backward)."""
    return run_as_forward(module, lambda *a: fn(module.weight, *a), *args)


def model_codebooks(model):
    """(K codebooks, C classes per codebook incl. stream BOS/EOS) of the base model."""
    base = base_higgs_model(model)
    return int(base.config.audio_num_codebooks), int(base.config.audio_codebook_size) + 2

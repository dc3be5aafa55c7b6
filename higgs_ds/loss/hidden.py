"""Run `HiggsAudioModel.forward` so that it returns the final normed hidden states instead of any logits.

`hidden_states_only(model)` temporarily replaces `audio_decoder_proj.forward` with one that returns the
hidden states untouched: inside the block `outputs.logits` is (B, T, H), `outputs.audio_logits` is None, and
`expanded_labels` / `audio_out_mask` are as usual. The loss then applies the head weights itself
(`head_modules`). `model` may be the bare model, a peft `PeftModel`, or a DeepSpeed engine (`.module`).
Under ZeRO-3 a head's weight is partitioned (empty) outside its module's forward: `call_with_weight` runs the loss
as the head module's forward, so ZeRO-3's own module hooks gather the weight for the forward and again for the
backward, where the head's gradient accumulates into the gathered parameter and ZeRO-3 reduces and partitions it.
"""
import contextlib

from ..models.unwrap import base_higgs_model


def _active(module):
    """The module that actually runs: a peft `modules_to_save` wrapper's active copy, else the module itself."""
    if hasattr(module, "modules_to_save") and hasattr(module, "original_module"):
        if getattr(module, "disable_adapters", False) or not module.active_adapters:
            return module.original_module
        return module.modules_to_save[module.active_adapters[0]]
    return module


def _check_supported(base):
    n = getattr(base.config, "audio_decoder_proj_num_layers", 0)
    if n:
        raise NotImplementedError(
            f"the fused loss needs audio_decoder_proj_num_layers == 0 (the released config); this model has {n} "
            "projector decoder layers between the hidden states and the heads")


def head_weights(model):
    """(text_lm_head.weight (V, H), audio_lm_head.weight (K*C, H)) of the heads that run, trainable or not."""
    base = base_higgs_model(model)
    _check_supported(base)
    proj = _active(base.audio_decoder_proj)
    text_w, audio_w = _active(proj.text_lm_head).weight, _active(proj.audio_lm_head).weight
    for name, w in (("text_lm_head", text_w), ("audio_lm_head", audio_w)):
        if w.dim() != 2 or w.numel() == 0:
            raise RuntimeError(f"{name}.weight has shape {tuple(w.shape)}: partitioned (ZeRO-3?) weights are "
                               "not supported by the fused loss")
    return text_w, audio_w


def head_modules(model):
    """(text_lm_head, audio_lm_head) modules that run (a peft `modules_to_save` wrapper's active copy)."""
    base = base_higgs_model(model)
    _check_supported(base)
    proj = _active(base.audio_decoder_proj)
    return _active(proj.text_lm_head), _active(proj.audio_lm_head)


def call_with_weight(module, fn, *args):
    """`fn(module.weight, *args)` run as `module`'s forward (through `module.__call__` and so its hooks: under
    ZeRO-3 the weight is gathered for it and for its backward)."""
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = lambda *a: fn(module.weight, *a)
    try:
        return module(*args)
    finally:
        if had_own:
            module.forward = previous
        else:
            del module.forward


def _hidden_passthrough(hidden_states, audio_out_mask, *args, **kwargs):
    return hidden_states, None, None, None, None, None


@contextlib.contextmanager
def hidden_states_only(model):
    """Inside the block, `model(**batch).logits` holds the final normed hidden states (B, T, H)."""
    base = base_higgs_model(model)
    _check_supported(base)
    proj = base.audio_decoder_proj
    had_own = "forward" in proj.__dict__
    previous = proj.__dict__.get("forward")
    proj.forward = _hidden_passthrough
    try:
        yield base
    finally:
        if had_own:
            proj.forward = previous
        else:
            del proj.forward


def model_codebooks(model):
    """(K codebooks, C classes per codebook incl. stream BOS/EOS) of the base model."""
    base = base_higgs_model(model)
    return int(base.config.audio_num_codebooks), int(base.config.audio_codebook_size) + 2

"""The training forward of `HiggsAudioModel`, owned here: a collated batch in, the final normed hidden states out.

`final_hidden_states(model, batch)` returns a `HiggsAudioModelOutputWithPast` whose `logits` hold the final normed
hidden states (B, L, H) and whose `expanded_labels` / `audio_out_mask` say what the heads score (no head has run).

With the batch's host-side `IndexPlan` (data/index_plan.py, under `INDEX_PLAN_KEY`) it runs without a host synchronisation,
calling boson's modules in boson's order: `embed_tokens` and `_embed_audio_ids`; the merge as one `index_select` of
their rows by `plan.source` (boson's own merge ran on the host); the causal mask from `plan.has_padding`; the rotary
embedding; every decoder layer; the final norm. A dual-FFN layer runs its norms, attention and both FFNs on
`index_select`ed rows written back with `index_copy_` (`_planned_layer`), where boson indexes with boolean masks;
fast-forward and Llama layers index nothing in training and run as boson's modules. Outputs and gradients equal
boson's forward (tests/models/test_sync_free.py). Without a plan (a Whisper tower, a caller that collated without
`plan=True`) it is boson's `HiggsAudioModel.forward` itself, stopped before the heads: the reference.

Activation checkpointing plugs in with `checkpoint_layers`; the loss's fused heads run through `run_as_forward`.
Boson's classes are never patched. Instance-level patches remain, all here, because the code that calls a module
only reaches it through that module's call: the wrapped model's `forward` for one call (DeepSpeed's engine and
peft call it), its projector's for boson's forward (its last step applies the heads), a head's for the loss
(ZeRO-3 gathers a weight only inside its module's call), and a checkpointed layer's, kept (boson's loop calls it).
"""
import contextlib
import functools

import torch
import torch.utils.checkpoint

from .unwrap import base_higgs_model

INDEX_PLAN_KEY = "index_plan"
_CHECKPOINTED = "higgs_ds_checkpointed"


@contextlib.contextmanager
def _forward_swapped(module, fn):
    """Inside the block `module.forward` is `fn`, on this instance only."""
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = fn
    try:
        yield module
    finally:
        if had_own:
            module.forward = previous
        else:
            del module.forward


def run_as_forward(module, fn, *args):
    """`fn(*args)` run as `module`'s forward, through `module.__call__` and so its hooks."""
    with _forward_swapped(module, fn):
        return module(*args)


def _hidden_passthrough(hidden_states, audio_out_mask, *args, **kwargs):
    return hidden_states, None, None, None, None, None


def require_plain_heads(base):
    """Raise unless the heads apply right to the final hidden states (no projector decoder layers)."""
    n = getattr(base.config, "audio_decoder_proj_num_layers", 0)
    if n:
        raise NotImplementedError(
            f"the fused loss needs audio_decoder_proj_num_layers == 0 (the released config); this model has {n} "
            "projector decoder layers between the hidden states and the heads")


@contextlib.contextmanager
def hidden_states_only(model):
    """Inside the block, boson's `model(**batch).logits` holds the final normed hidden states (B, T, H)."""
    base = base_higgs_model(model)
    require_plain_heads(base)
    with _forward_swapped(base.audio_decoder_proj, _hidden_passthrough):
        yield base


def final_hidden_states(model, batch):
    """The forward of `model` (bare, peft or a DeepSpeed engine, called as `model(**batch)` so that wrappers and
    their hooks run) on a collated batch, stopped at the final normed hidden states (in `.logits`)."""
    plan = batch.get(INDEX_PLAN_KEY)
    kwargs = {k: v for k, v in batch.items() if k != INDEX_PLAN_KEY}
    if plan is None:
        with hidden_states_only(model):
            return model(**kwargs)
    base = base_higgs_model(model)
    require_plain_heads(base)
    with _forward_swapped(base, functools.partial(_planned_forward, base, plan)):
        return model(**kwargs)


def _codes(base, ids, device):
    if ids is not None and ids.shape[-1] > 0:
        return ids.to(device)
    return torch.zeros((base.audio_num_codebooks, 0), device=device, dtype=torch.long)


def _merge(base, plan, input_ids, audio_in_ids, audio_out_ids):
    """Boson's embeddings, merged by `plan.source` into (B, L, H)."""
    if tuple(input_ids.shape) != plan.text_shape:
        raise RuntimeError(f"the batch's {INDEX_PLAN_KEY} does not describe this batch (input_ids {tuple(input_ids.shape)},"
                           f" plan {plan.text_shape})")
    embeds = base.embed_tokens(input_ids)
    b, t, h = embeds.shape
    parts = [embeds.new_zeros(1, h), embeds.reshape(b * t, h)]
    if base.config.encode_audio_in_tokens:
        parts.append(base._embed_audio_ids(_codes(base, audio_in_ids, input_ids.device)))
    parts.append(base._embed_audio_ids(_codes(base, audio_out_ids, input_ids.device)))
    table = torch.cat(parts)
    if table.shape[0] != plan.n_sources:
        raise RuntimeError(f"{INDEX_PLAN_KEY} expects {plan.n_sources} source rows, the forward has {table.shape[0]}")
    return table.index_select(0, plan.source).view(b, -1, h)


def _causal_mask(base, plan, merged, cache_position):
    """Boson's `_update_causal_mask` without its device reads: padding is known from the plan."""
    impl = base.config._attn_implementation
    if impl == "flash_attention_2":
        return plan.attention_mask if plan.has_padding else None
    if impl == "sdpa" and not plan.has_padding:  # boson: AttentionMaskConverter._ignore_causal_mask_sdpa
        return None
    if impl not in ("sdpa", "eager"):
        return base._update_causal_mask(plan.attention_mask, merged, cache_position, None, False)
    from boson_multimodal.model.higgs_audio import modeling_higgs_audio as mha

    dtype, device = merged.dtype, merged.device
    min_dtype = torch.finfo(dtype).min
    mask = mha._prepare_4d_causal_attention_mask_with_cache_position(
        plan.attention_mask, sequence_length=merged.shape[1], target_length=plan.attention_mask.shape[-1],
        dtype=dtype, device=device, min_dtype=min_dtype, cache_position=cache_position, batch_size=merged.shape[0])
    if impl == "sdpa" and device.type == "cuda":
        mask = mha.AttentionMaskConverter._unmask_unattended(mask, min_dtype)
    return mask


def _planned_layer(layer, plan, hidden, codes_mask, attention_mask, position_ids, cache_position,
                   position_embeddings):
    """`HiggsAudioDualFFNDecoderLayer.forward`'s training path (audio present, no cache, not fast-forward, no audio
    attention) with the text / audio rows taken by index."""
    residual = hidden
    hidden = torch.where(codes_mask.unsqueeze(-1), layer.audio_input_layernorm(hidden), layer.input_layernorm(hidden))
    hidden, _, _ = layer.self_attn(
        hidden_states=hidden, attention_mask=attention_mask, position_ids=position_ids, past_key_value=None,
        output_attentions=False, use_cache=False, cache_position=cache_position,
        position_embeddings=position_embeddings)
    flat = (residual + hidden).reshape(-1, hidden.shape[-1])
    text = flat.index_select(0, plan.text_index)
    audio = flat.index_select(0, plan.codes_index)
    text = text + layer.mlp(layer.post_attention_layernorm(text))
    audio = audio + layer.audio_mlp(layer.audio_post_attention_layernorm(audio))
    out = flat.new_empty(flat.shape).index_copy_(0, plan.text_index, text).index_copy_(0, plan.codes_index, audio)
    return out.view_as(residual)


def _is_planned(layer):
    return (not getattr(layer, "fast_forward", True) and not layer.use_audio_attention
            and hasattr(layer, "audio_mlp"))


def _run_layer(layer, plan, hidden, codes_mask, causal, cache_position, position_embeddings):
    if not _is_planned(layer):  # boson's module (its own checkpointing wrapper included)
        extra = {"audio_out_mask": codes_mask} if hasattr(layer, "fast_forward") else {}
        return layer(hidden, attention_mask=causal, position_ids=plan.position_ids, cache_position=cache_position,
                     position_embeddings=position_embeddings, **extra)[0]
    args = (layer, plan, hidden, codes_mask, causal, plan.position_ids, cache_position, position_embeddings)
    if is_checkpointed(layer) and layer.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(_planned_layer, *args, use_reentrant=False)
    return _planned_layer(*args)


def _planned_forward(base, plan, input_ids, audio_in_ids=None, audio_out_ids=None, **_):
    """`HiggsAudioModel.forward`'s training path (no cache, no Whisper tower) from boson's modules and the plan."""
    from boson_multimodal.model.higgs_audio.modeling_higgs_audio import HiggsAudioModelOutputWithPast

    hidden = _merge(base, plan, input_ids, audio_in_ids, audio_out_ids)
    cache_position = torch.arange(hidden.shape[1], device=hidden.device)
    causal = _causal_mask(base, plan, hidden, cache_position)
    position_embeddings = base.rotary_emb(hidden, plan.position_ids)
    codes_mask = plan.audio_in_discrete_codes_mask | plan.audio_out_mask
    for layer in base.layers:
        hidden = _run_layer(layer, plan, hidden, codes_mask, causal, cache_position, position_embeddings)
    return HiggsAudioModelOutputWithPast(
        logits=base.norm(hidden), expanded_input_ids=plan.input_ids, expanded_labels=plan.labels,
        audio_in_mask=plan.audio_in_mask, audio_in_discrete_codes_mask=plan.audio_in_discrete_codes_mask,
        audio_out_mask=plan.audio_out_mask, attention_mask=plan.attention_mask)


def _checkpointed(layer, forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if layer.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    setattr(run, _CHECKPOINTED, True)
    return run


def is_checkpointed(layer):
    """Whether `checkpoint_layers` marked this decoder layer."""
    return getattr(layer.forward, _CHECKPOINTED, False)


def checkpoint_layers(model, indices):
    """Recompute the activations of the decoder layers at `indices` in the backward (while training with grad).

    The planned forward checkpoints those layers itself, whenever the marking happened. Boson's forward (no plan)
    calls each layer through its call, so a marked layer's instance `forward` wraps the one it had under
    `torch.utils.checkpoint` (non-reentrant): that wrapper is also the mark."""
    layers = base_higgs_model(model).layers
    for i in indices:
        layer = layers[i]
        if not is_checkpointed(layer):
            layer.forward = _checkpointed(layer, layer.forward)

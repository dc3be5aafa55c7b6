"""A training forward of `HiggsAudioModel` without host synchronisations, from the host-side `StepPlan`.

Boson's forward finds audio positions with boolean masks: `merge_input_ids_with_audio_features` (`torch.where`,
`nonzero`), `_update_causal_mask` (`torch.all(mask == 1)` to drop the mask for SDPA) and every dual-FFN layer
(`h[~mask]`, `residual[mask] += ...`, in the forward and again in the backward). Each one stalls the launch queue.

`install()` patches those three places, once and in this module only; each patch runs boson's original unless a plan
is active (`use(plan)`, set by `loss.compute_loss` from the batch's `PLAN_KEY`), so inference and any other caller
are untouched. With a plan:
- the merge is `index_select` of `cat([0, text embeddings, audio-in, audio-out])` by `plan.source`, the masks,
  labels and position ids are the plan's (boson's own merge ran on the host, `data/plan.py`);
- the causal mask is dropped or built from `plan.has_padding` (no device read);
- a dual-FFN layer (training path: no cache, not fast-forward, no audio attention) runs its text and audio FFNs
  on `index_select`ed rows and writes them back with `index_copy_`; the layer's other steps are boson's, in
  boson's order, so outputs and gradients are identical (tests/models/test_sync_free.py).
Layers run under activation checkpointing keep the plan for their recomputation (engine/activation_checkpointing.py
runs them in a copy of the forward's context).
"""
import contextlib
import contextvars
import inspect

import torch

PLAN_KEY = "sync_free_plan"
_ACTIVE = contextvars.ContextVar("higgs_ds_sync_free_plan", default=None)
_ORIGINAL = {}


def active_plan():
    return _ACTIVE.get()


@contextlib.contextmanager
def use(plan):
    """Run the model's forward inside with `plan` (None: boson's own code paths)."""
    if plan is not None:
        install()
    token = _ACTIVE.set(plan)
    try:
        yield plan
    finally:
        _ACTIVE.reset(token)


def _merge(*args, **kwargs):
    plan = _ACTIVE.get()
    original = _ORIGINAL["merge"]
    if plan is None:
        return original(*args, **kwargs)
    a = _ORIGINAL["merge_sig"].bind(*args, **kwargs)
    a.apply_defaults()
    a = a.arguments
    embeds = a["inputs_embeds"]
    b, t, h = embeds.shape
    if (a["audio_features_embed"] is not None or (b, t) != plan.text_shape or a["left_padding"] != plan.left_padding
            or a["round_to"] != plan.round_to):
        raise RuntimeError(f"the batch's {PLAN_KEY} does not describe this forward (input {tuple(embeds.shape)}, "
                           f"plan {plan.text_shape}; Whisper features and cached decoding are not planned)")
    parts = [embeds.new_zeros(1, h), embeds.reshape(b * t, h)]
    parts += [e for e in (a["audio_in_embed"], a["audio_out_embed"]) if e is not None]
    table = torch.cat(parts)
    if table.shape[0] != plan.n_sources:
        raise RuntimeError(f"{PLAN_KEY} expects {plan.n_sources} source rows, the forward has {table.shape[0]}")
    merged = table.index_select(0, plan.source).view(b, -1, h)
    return (merged, plan.attention_mask, plan.labels, plan.position_ids, plan.input_ids, plan.audio_in_mask,
            plan.audio_in_discrete_codes_mask, plan.audio_out_mask)


def _update_causal_mask(self, attention_mask, input_tensor, cache_position, past_key_values, output_attentions):
    plan = _ACTIVE.get()
    impl = self.config._attn_implementation
    if plan is None or past_key_values is not None or output_attentions or impl not in ("sdpa", "eager",
                                                                                       "flash_attention_2"):
        return _ORIGINAL["causal_mask"](self, attention_mask, input_tensor, cache_position, past_key_values,
                                        output_attentions)
    if impl == "flash_attention_2":
        return attention_mask if plan.has_padding else None
    if impl == "sdpa" and not plan.has_padding:  # boson: AttentionMaskConverter._ignore_causal_mask_sdpa
        return None
    from boson_multimodal.model.higgs_audio import modeling_higgs_audio as mha

    dtype, device = input_tensor.dtype, input_tensor.device
    min_dtype = torch.finfo(dtype).min
    length = attention_mask.shape[-1]
    mask = mha._prepare_4d_causal_attention_mask_with_cache_position(
        attention_mask, sequence_length=input_tensor.shape[1], target_length=length, dtype=dtype, device=device,
        min_dtype=min_dtype, cache_position=cache_position, batch_size=input_tensor.shape[0])
    if impl == "sdpa" and device.type == "cuda":
        mask = mha.AttentionMaskConverter._unmask_unattended(mask, min_dtype)
    return mask


def _planned_layer(layer, plan, a):
    """The training path of `HiggsAudioDualFFNDecoderLayer.forward` (has_audio_out, not fast-forward) by index."""
    hidden, mask = a["hidden_states"], a["audio_out_mask"]
    residual = hidden
    hidden = torch.where(mask.unsqueeze(-1), layer.audio_input_layernorm(hidden), layer.input_layernorm(hidden))
    hidden, _, _ = layer.self_attn(
        hidden_states=hidden, attention_mask=a["attention_mask"], position_ids=a["position_ids"], past_key_value=None,
        output_attentions=False, use_cache=False, cache_position=a["cache_position"],
        position_embeddings=a["position_embeddings"], **a["kwargs"])
    flat = (residual + hidden).reshape(-1, hidden.shape[-1])
    text = flat.index_select(0, plan.text_index)
    audio = flat.index_select(0, plan.codes_index)
    text = text + layer.mlp(layer.post_attention_layernorm(text))
    audio = audio + layer.audio_mlp(layer.audio_post_attention_layernorm(audio))
    out = flat.new_empty(flat.shape).index_copy_(0, plan.text_index, text).index_copy_(0, plan.codes_index, audio)
    return (out.view_as(residual),)


def _dual_ffn_forward(self, *args, **kwargs):
    plan = _ACTIVE.get()
    original = _ORIGINAL["layer"]
    if plan is None or self.fast_forward or self.use_audio_attention:
        return original(self, *args, **kwargs)
    a = _ORIGINAL["layer_sig"].bind(self, *args, **kwargs)
    a.apply_defaults()
    a = a.arguments
    mask = a["audio_out_mask"]
    if (a["use_cache"] or a["output_attentions"] or a["past_key_value"] is not None or mask is None
            or tuple(mask.shape) != tuple(plan.audio_out_mask.shape) or mask.shape[0] == 0):
        return original(self, *args, **kwargs)
    return _planned_layer(self, plan, a)


def install():
    """Patch boson's merge, causal mask and dual-FFN layer (idempotent; each falls back to boson without a plan)."""
    if _ORIGINAL:
        return
    from boson_multimodal.model.higgs_audio import modeling_higgs_audio as mha

    _ORIGINAL.update(merge=mha.merge_input_ids_with_audio_features,
                     merge_sig=inspect.signature(mha.merge_input_ids_with_audio_features),
                     causal_mask=mha.HiggsAudioModel._update_causal_mask,
                     layer=mha.HiggsAudioDualFFNDecoderLayer.forward,
                     layer_sig=inspect.signature(mha.HiggsAudioDualFFNDecoderLayer.forward))
    mha.merge_input_ids_with_audio_features = _merge
    mha.HiggsAudioModel._update_causal_mask = _update_causal_mask
    mha.HiggsAudioDualFFNDecoderLayer.forward = _dual_ffn_forward

"""The LM in two layouts: boson-multimodal's `HiggsAudioModel` and transformers' `HiggsAudioV2ForConditionalGeneration`.

Weights: a pure key renaming (transformers' `convert_higgs_audio_v2_to_hf.py`), no tensor is touched, so
boson -> native -> boson is bitwise. Config: native is flat (the text config at top level), `codebook_size` counts
the stream bos/eos (1024 + 2), rope lives in `rope_parameters`. Mapping table: docs/INTEROP.md.
"""
import re

import torch

from ..errors import FormatError

# boson -> native, applied in order (exactly transformers' ORIGINAL_TO_CONVERTED_KEY_MAPPING)
TO_NATIVE = ((r"^audio_codebook_embeddings\.", "model.embed_audio_tokens.embed_audio_tokens."),
             (r"^(embed_tokens|layers|norm)\.", r"model.\1."),
             (r"^audio_decoder_proj\.", ""))
TO_BOSON = ((r"^model\.embed_audio_tokens\.embed_audio_tokens\.", "audio_codebook_embeddings."),
            (r"^model\.(embed_tokens|layers|norm)\.", r"\1."),
            (r"^(audio_lm_head|text_lm_head)\.", r"audio_decoder_proj.\1."))
DROPPED = ("audio_codebook_weights", "rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
# the release's ids; used for native -> boson when the dir's tokenizer does not name the token
RELEASE_IDS = {"<|audio_bos|>": 128011, "<|audio_eos|>": 128012, "<|audio_out_bos|>": 128013,
               "<|reserved_special_token_6|>": 128014, "<|AUDIO|>": 128015, "<|AUDIO_OUT|>": 128016}
DELAY_TOKEN = "<|reserved_special_token_6|>"
TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
               "pad_token_id", "bos_token_id", "eos_token_id", "pretraining_tp", "tie_word_embeddings",
               "attention_bias", "attention_dropout", "mlp_bias", "head_dim")
# boson features the native model does not have: a config using one cannot be converted
BOSON_REQUIRES = {"audio_adapter_type": "dual_ffn_fast_forward", "audio_decoder_proj_num_layers": 0,
                  "use_delay_pattern": True, "skip_audio_tower": True, "audio_embed_avg": False,
                  "use_audio_out_embed_projector": False, "use_audio_out_self_attention": False,
                  "use_rq_transformer": False}


def rename(key, table):
    for pattern, repl in table:
        key = re.sub(pattern, repl, key)
    return key


# boson training checkpoints may split a matrix into frozen + trainable rows (PartiallyFrozenEmbedding/-Linear)
SPLIT_ROWS = {"embed_tokens.weight": ("embed_tokens.embedding_frozen.weight", "embed_tokens.embedding_trainable.weight"),
              **{f"audio_decoder_proj.{h}.weight": (f"audio_decoder_proj.{h}.linear_frozen.weight",
                                                    f"audio_decoder_proj.{h}.linear_trainable.weight")
                 for h in ("audio_lm_head", "text_lm_head")}}


def join_split_rows(sd):
    """Concatenate frozen + trainable row blocks back into one matrix (as transformers' conversion does)."""
    sd = dict(sd)
    for whole, (frozen, trainable) in SPLIT_ROWS.items():
        if frozen in sd:
            sd[whole] = torch.cat([sd.pop(frozen), sd.pop(trainable)], dim=0)
    return sd


def state_dict_to_native(sd):
    return {rename(k, TO_NATIVE): v for k, v in join_split_rows(sd).items() if not k.endswith(DROPPED)}


def state_dict_to_boson(sd):
    return {rename(k, TO_BOSON): v for k, v in sd.items() if not k.endswith(DROPPED)}


def _rope_parameters(text):
    scaling = dict(text.get("rope_scaling") or {})
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    return {"rope_type": rope_type, "rope_theta": text.get("rope_theta", 10000.0), **scaling}


def _rope_fields(params):
    params = dict(params)
    theta, rope_type = params.pop("rope_theta", 10000.0), params.pop("rope_type", "default")
    return {"rope_theta": theta, "rope_scaling": None if rope_type == "default" else {"rope_type": rope_type, **params}}


def config_to_native(boson, special_ids=None):
    """boson config.json dict -> native config.json dict. `special_ids`: token -> id from the dir's tokenizer."""
    for key, want in BOSON_REQUIRES.items():
        if boson.get(key, want) != want:
            raise FormatError(f"config.json {key}={boson.get(key)!r}: the transformers-native model needs {want!r}")
    text = boson["text_config"]
    dual = boson.get("audio_dual_ffn_layers") or []
    if sorted(dual) != list(range(text["num_hidden_layers"])):
        raise FormatError(f"config.json audio_dual_ffn_layers={dual}: the native model has the audio FFN on every layer")
    ids = {**RELEASE_IDS, **(special_ids or {})}
    native = {k: text[k] for k in TEXT_FIELDS if k in text}
    native.update(model_type="higgs_audio_v2", architectures=["HiggsAudioV2ForConditionalGeneration"],
                  rope_parameters=_rope_parameters(text), num_codebooks=boson["audio_num_codebooks"],
                  codebook_size=boson["audio_codebook_size"] + 2, audio_token_id=boson["audio_out_token_idx"],
                  audio_bos_token_id=boson["audio_out_bos_token_id"], audio_delay_token_id=ids[DELAY_TOKEN],
                  audio_stream_bos_id=boson["audio_stream_bos_id"], audio_stream_eos_id=boson["audio_stream_eos_id"])
    if boson.get("torch_dtype"):
        native["dtype"] = boson["torch_dtype"]
    return native


def config_to_boson(native, special_ids=None):
    """native config.json dict -> boson config.json dict (the release's layout: dual FFN on every layer)."""
    ids = {**RELEASE_IDS, **(special_ids or {})}
    text = {k: native[k] for k in TEXT_FIELDS if k in native}
    text.update(model_type="llama", **_rope_fields(native.get("rope_parameters") or {}))
    n_layers = text["num_hidden_layers"]
    boson = dict(BOSON_REQUIRES, model_type="higgs_audio", architectures=["HiggsAudioModel"], text_config=text,
                 hidden_size=text["hidden_size"], audio_dual_ffn_layers=list(range(n_layers)),
                 encode_whisper_embed=False, encode_audio_in_tokens=True,
                 audio_num_codebooks=native["num_codebooks"], audio_codebook_size=native["codebook_size"] - 2,
                 audio_stream_bos_id=native.get("audio_stream_bos_id", 1024),
                 audio_stream_eos_id=native.get("audio_stream_eos_id", 1025),
                 audio_out_token_idx=native["audio_token_id"], audio_out_bos_token_id=native["audio_bos_token_id"],
                 audio_in_token_idx=ids["<|AUDIO|>"], audio_eos_token_id=ids["<|audio_eos|>"],
                 pad_token_id=text.get("pad_token_id", 128001))
    if native.get("dtype") or native.get("torch_dtype"):
        boson["torch_dtype"] = native.get("dtype") or native.get("torch_dtype")
    return boson


def is_native_config(config):
    return config.get("model_type") == "higgs_audio_v2"


def is_boson_config(config):
    return config.get("model_type") == "higgs_audio"

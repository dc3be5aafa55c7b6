"""boson <-> transformers-native LM layout: lossless round trip, detection and one-time conversion at load time."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from higgs_ds.commands.convert import convert_dir
from higgs_ds.errors import EXIT_NOINPUT
from higgs_ds.models import convert, lm_format


def test_boson_native_boson_is_bitwise(tiny_assets, tmp_path):
    native, back = str(tmp_path / "native"), str(tmp_path / "back")
    assert convert_dir(tiny_assets.model_path, native, "native") == "boson"
    assert convert.model_format(native) == "native"
    assert convert_dir(native, back, "boson") == "native"
    src = load_file(os.path.join(tiny_assets.model_path, "model.safetensors"))
    nat = convert.read_state_dict(native)
    assert "model.embed_audio_tokens.embed_audio_tokens.weight" in nat and "audio_lm_head.weight" in nat
    assert "model.layers.1.audio_mlp.up_proj.weight" in nat and "text_lm_head.weight" in nat
    out = convert.read_state_dict(back)
    assert sorted(out) == sorted(src)
    for k, v in src.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v), k


def test_config_round_trip_keeps_the_model(tiny_assets, tmp_path):
    """The re-built boson config describes the same model: every field the forward reads is equal, and the two
    models give identical outputs on a probe batch."""
    from higgs_ds.inference.export import probe_batch
    from higgs_ds.models.loading import load_model

    native, back = str(tmp_path / "native"), str(tmp_path / "back")
    convert_dir(tiny_assets.model_path, native, "native")
    convert_dir(native, back, "boson")
    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        a = json.load(f)
    with open(os.path.join(back, "config.json")) as f:
        b = json.load(f)
    for key in ("audio_num_codebooks", "audio_codebook_size", "audio_stream_bos_id", "audio_stream_eos_id",
                "audio_out_token_idx", "audio_out_bos_token_id", "audio_in_token_idx", "audio_eos_token_id",
                "audio_dual_ffn_layers", "use_delay_pattern", "skip_audio_tower", "audio_adapter_type", "hidden_size"):
        assert a[key] == b[key], key
    for key in lm_format.TEXT_FIELDS + ("rope_theta", "rope_scaling"):
        assert a["text_config"].get(key) == b["text_config"].get(key), key
    m_a, m_b = load_model(tiny_assets.model_path).eval(), load_model(back).eval()
    batch = probe_batch(m_a.config)
    with torch.no_grad():
        o_a, o_b = m_a(**batch), m_b(**batch)
    assert torch.equal(o_a.logits, o_b.logits) and torch.equal(o_a.audio_logits, o_b.audio_logits)


def test_split_rows_are_joined():
    a, b = torch.randn(5, 3), torch.randn(2, 3)
    out = lm_format.state_dict_to_native({"embed_tokens.embedding_frozen.weight": a,
                                          "embed_tokens.embedding_trainable.weight": b})
    assert list(out) == ["model.embed_tokens.weight"] and torch.equal(out["model.embed_tokens.weight"], torch.cat([a, b]))


def test_native_config_fields(tiny_assets):
    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        boson = json.load(f)
    native = lm_format.config_to_native(boson, convert.special_ids(tiny_assets.model_path))
    assert native["codebook_size"] == 1026 and native["num_codebooks"] == 8
    assert native["audio_token_id"] == boson["audio_out_token_idx"]
    assert native["audio_bos_token_id"] == boson["audio_out_bos_token_id"]
    assert native["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    release_text = dict(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    rope = lm_format._rope_parameters(release_text)
    assert rope == {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert lm_format._rope_fields(rope) == release_text


@pytest.mark.parametrize("key,value", [("audio_adapter_type", "stack"), ("skip_audio_tower", False),
                                       ("audio_dual_ffn_layers", [0])])
def test_unconvertible_config_is_named(tiny_assets, key, value):
    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        boson = json.load(f)
    boson[key] = value
    with pytest.raises(lm_format.FormatError, match=key):
        lm_format.config_to_native(boson)


def test_native_dir_is_converted_once_at_load(tiny_assets, tmp_path):
    from higgs_ds.models.loading import ModelPaths

    native = str(tmp_path / "native")
    convert_dir(tiny_assets.model_path, native, "native")
    paths = ModelPaths.resolve(native, tiny_assets.audio_tokenizer_path)
    assert paths.model_path.startswith(convert.converted_cache_root()) and convert.model_format(paths.model_path) == "boson"
    assert paths.tokenizer_path == paths.model_path
    done = os.stat(os.path.join(paths.model_path, ".complete")).st_mtime_ns
    again = ModelPaths.resolve(native, tiny_assets.audio_tokenizer_path)
    assert again.model_path == paths.model_path
    assert os.stat(os.path.join(paths.model_path, ".complete")).st_mtime_ns == done  # not converted again
    out = convert.read_state_dict(paths.model_path)
    for k, v in load_file(os.path.join(tiny_assets.model_path, "model.safetensors")).items():
        assert torch.equal(out[k], v), k


def test_convert_cli(tiny_assets, tmp_path, capsys):
    from higgs_ds.cli import main

    assert main(["convert", "--input", tiny_assets.model_path, "--output", str(tmp_path / "n"), "--to", "native"]) == 0
    assert convert.model_format(str(tmp_path / "n")) == "native"
    assert main(["convert", "--input", "nobody/nothing", "--output", str(tmp_path / "x")]) == EXIT_NOINPUT
    assert "nobody/nothing@main: not in the local cache" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tokenizer_round_trip(tiny_assets, tmp_path_factory):
    """The tiny boson audio tokenizer -> native -> boson (dirs)."""
    tmp = tmp_path_factory.mktemp("tk")
    native, back = str(tmp / "native"), str(tmp / "back")
    assert convert_dir(tiny_assets.audio_tokenizer_path, native, "native", audio_tokenizer=True) == "boson"
    assert convert_dir(native, back, "boson", audio_tokenizer=True) == "native"
    return native, back


def test_audio_tokenizer_round_trip_to_float_rounding(tiny_assets, tokenizer_round_trip):
    from higgs_ds.models import tokenizer_format

    native, back = tokenizer_round_trip
    src = torch.load(os.path.join(tiny_assets.audio_tokenizer_path, "model.pth"), weights_only=True)
    out = torch.load(os.path.join(back, "model.pth"), weights_only=True)
    nat = convert.read_state_dict(native)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in nat)  # weight norm merged
    assert "acoustic_encoder.block.4.res_unit3.conv2.weight" in nat and "quantizer.quantizers.7.codebook.embed" in nat
    assert "acoustic_decoder.block.0.conv_t1.weight" in nat and "fc2.bias" in nat
    assert sorted(out) == sorted(src)
    for k, v in src.items():
        assert torch.allclose(out[k].float(), v.float(), rtol=1e-5, atol=1e-6), k
    # the merge itself, against torch's own weight norm
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))
    merged = tokenizer_format.merge_weight_norm({"c.weight_g": conv.weight_g, "c.weight_v": conv.weight_v})
    conv(torch.zeros(1, 4, 5))  # recomputes conv.weight from g and v
    assert torch.allclose(merged["c.weight"], conv.weight, atol=1e-7)


def test_native_audio_tokenizer_is_converted_once_at_load(tiny_assets, tokenizer_round_trip):
    """A native tokenizer dir: converted into the cache (with its own semantic teacher), then encodes as the
    original does."""
    import numpy as np

    from higgs_ds.data.synthetic import speech_like
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer
    from higgs_ds.models.loading import ModelPaths

    native, _ = tokenizer_round_trip
    paths = ModelPaths.resolve(tiny_assets.model_path, native)
    assert paths.audio_tokenizer_path.startswith(convert.converted_cache_root())
    assert os.path.isdir(os.path.join(paths.audio_tokenizer_path, "semantic_teacher"))
    assert ModelPaths.resolve(tiny_assets.model_path, native).audio_tokenizer_path == paths.audio_tokenizer_path
    wav = speech_like(np.random.default_rng(0), 1.0).astype(np.float32)
    codes = load_audio_tokenizer(tiny_assets.audio_tokenizer_path).encode(wav, sr=24000)
    assert torch.equal(load_audio_tokenizer(paths.audio_tokenizer_path).encode(wav, sr=24000), codes)

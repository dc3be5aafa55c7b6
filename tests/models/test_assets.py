"""The embedded tiny default: real boson-multimodal classes, loadable through the same path as a real model dir."""
import os
import shutil

import numpy as np
import pytest
import torch

from higgs_ds.assets.tiny_text_tokenizer import SPECIAL_TOKENS


def test_tiny_model_is_release_shaped(tiny_bundle):
    from boson_multimodal.model.higgs_audio import HiggsAudioModel

    model, tok, _ = tiny_bundle
    cfg = model.config
    assert isinstance(model, HiggsAudioModel)
    assert cfg.audio_adapter_type == "dual_ffn_fast_forward" and cfg.use_delay_pattern and cfg.skip_audio_tower
    assert (cfg.audio_num_codebooks, cfg.audio_codebook_size) == (8, 1024)
    assert cfg.audio_dual_ffn_layers == list(range(cfg.text_config.num_hidden_layers))
    assert cfg.hidden_size == cfg.text_config.hidden_size  # top level too, as released (CUDA-graph capture reads it)
    # every special token the ChatML path uses exists, is atomic and fits the tiny vocab
    for t in SPECIAL_TOKENS:
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] < cfg.text_config.vocab_size, t
    assert cfg.audio_out_token_idx == tok.convert_tokens_to_ids("<|AUDIO_OUT|>")
    assert model.audio_out_bos_token_id == tok.convert_tokens_to_ids("<|audio_out_bos|>")


def test_copied_dirs_load_like_a_real_release(tiny_assets, tmp_path):
    """Explicit --model_path/--audio_tokenizer_path dirs (elsewhere on disk) load like the embedded ones; the
    serve engine's own tokenizer load (boson's, behind `serve_engine_audio_tokenizer`) encodes identically."""
    from boson_multimodal.audio_processing.higgs_audio_tokenizer import HiggsAudioTokenizer
    from boson_multimodal.model.higgs_audio import HiggsAudioModel
    from boson_multimodal.serve import serve_engine
    from transformers import AutoTokenizer

    from higgs_ds.models.audio_tokenizer import serve_engine_audio_tokenizer
    from higgs_ds.models.loading import ModelPaths, load_all

    mdir, adir = tmp_path / "m", tmp_path / "a"
    shutil.copytree(tiny_assets.model_path, mdir)
    shutil.copytree(tiny_assets.audio_tokenizer_path, adir)
    model, tok, audio_tok = load_all(ModelPaths.resolve(str(mdir), str(adir)))
    ref = HiggsAudioModel.from_pretrained(tiny_assets.model_path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert AutoTokenizer.from_pretrained(str(mdir)).get_vocab() == tok.get_vocab()
    with serve_engine_audio_tokenizer():
        boson_tok = serve_engine.load_higgs_audio_tokenizer(str(adir), device="cpu")
    assert type(boson_tok) is HiggsAudioTokenizer and type(audio_tok) is HiggsAudioTokenizer
    wav = np.sin(np.linspace(0, 800, 24000)).astype(np.float32) * 0.3
    codes = audio_tok.encode(wav, 24000)
    assert codes.shape == (8, 25)  # 25 frames/s, 8 codebooks
    assert torch.equal(codes, boson_tok.encode(wav, 24000))  # codebooks were initialised at build time


def test_missing_files_give_clear_errors(tiny_assets, tmp_path):
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer
    from higgs_ds.models.loading import ModelPaths

    with pytest.raises(FileNotFoundError, match="--model_path: directory not found"):
        ModelPaths.resolve(str(tmp_path / "nope"), tiny_assets.audio_tokenizer_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        ModelPaths.resolve(str(tmp_path / "empty"), tiny_assets.audio_tokenizer_path)
    # the embedded layout finds its audio tokenizer beside the model dir; a lone model dir must name one
    assert ModelPaths.resolve(tiny_assets.model_path).audio_tokenizer_path == tiny_assets.audio_tokenizer_path
    shutil.copytree(tiny_assets.model_path, tmp_path / "lone" / "model")
    with pytest.raises(ValueError, match="without --audio_tokenizer_path"):
        ModelPaths.resolve(str(tmp_path / "lone" / "model"))
    shutil.copy(os.path.join(tiny_assets.audio_tokenizer_path, "config.json"), tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model.pth not found"):
        load_audio_tokenizer(str(tmp_path / "empty"))


def test_build_is_deterministic(tiny_assets, tmp_path):
    """Building the model dir again gives bit-identical weights (so every machine trains the same default)."""
    from safetensors.torch import load_file

    from higgs_ds.assets.tiny import _build_model_dir

    _build_model_dir(str(tmp_path / "again"))
    a = load_file(os.path.join(tiny_assets.model_path, "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

"""The narrow audio tokenizer (`higgs_ds_widths`): at boson's own widths, the rebuild equals boson's constructor;
the embedded tiny one stays small."""
import json
import os

import numpy as np
import torch

from higgs_ds.assets.tiny import TINY_AUDIO_TOKENIZER
from higgs_ds.models.audio_tokenizer import BOSON_WIDTHS, WIDTHS_KEY, build_audio_tokenizer, semantic_teacher_from


def _teacher(path, hidden):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                             conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=16)).save_pretrained(path)
    return str(path)


def test_rebuild_at_boson_widths_is_boson_constructor(tmp_path):
    """`_set_widths` at 64/1024/768 rebuilds exactly what boson's constructor builds: same keys, shapes, and (the
    weights of one loaded into the other) the same codes."""
    import boson_multimodal.audio_processing.higgs_audio_tokenizer as hat

    config = {k: v for k, v in TINY_AUDIO_TOKENIZER.items() if k != WIDTHS_KEY}
    teacher = _teacher(tmp_path / "t768", BOSON_WIDTHS["semantic_hidden_size"])
    with semantic_teacher_from(teacher):
        boson = hat.HiggsAudioTokenizer(**config, device="cpu").eval()
    ours = build_audio_tokenizer({**config, WIDTHS_KEY: dict(BOSON_WIDTHS)}, teacher).eval()
    wav = (np.sin(np.linspace(0, 900, 24000)) * 0.3).astype(np.float32)
    boson.encode(wav[::-1].copy(), 24000)  # a fresh quantizer k-means-initialises its codebooks on a first encode
    theirs, mine = boson.state_dict(), ours.state_dict()
    assert list(theirs) == list(mine)
    assert all(theirs[k].shape == mine[k].shape for k in theirs)
    ours.load_state_dict(theirs)
    assert torch.equal(boson.encode(wav, 24000), ours.encode(wav, 24000))


def test_narrow_widths_shape_every_module(tmp_path):
    """Every width boson hard-codes follows `higgs_ds_widths`; a teacher of another width is refused."""
    import pytest

    widths = TINY_AUDIO_TOKENIZER[WIDTHS_KEY]
    tok = build_audio_tokenizer(TINY_AUDIO_TOKENIZER, _teacher(tmp_path / "t", widths["semantic_hidden_size"]))
    assert tok.encoder.block[0].weight_v.shape[0] == widths["encoder_hidden_size"]
    assert tok.decoder_2.model[0].weight_v.shape[0] == widths["decoder_hidden_size"]
    assert tok.encoder_semantic.conv.conv.in_channels == widths["semantic_hidden_size"]
    assert tok.fc_prior.in_features == TINY_AUDIO_TOKENIZER["D"] + widths["semantic_hidden_size"]
    assert not any(p.is_meta for p in tok.parameters())
    with pytest.raises(ValueError, match="semantic teacher's hidden_size 48"):
        build_audio_tokenizer(TINY_AUDIO_TOKENIZER, _teacher(tmp_path / "t48", 48))


def test_embedded_audio_tokenizer_is_small(tiny_assets):
    """The embedded audio tokenizer is at most 20 MB on disk (speed: bench/audio_tokenizer.py)."""
    root = tiny_assets.audio_tokenizer_path
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    assert size <= 20 * 2**20, size
    with open(os.path.join(root, "config.json")) as f:
        assert json.load(f)["ratios"] == [8, 5, 4, 2, 3]  # the release's 24 kHz / 25 frames-per-second geometry

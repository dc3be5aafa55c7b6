"""Build (once, deterministically, offline) and locate the embedded tiny default.

Layout, the same as the real release so one loading path serves both:
    <cache>/tiny-v3/model/            config.json, model.safetensors, tokenizer files   (--model_path)
    <cache>/tiny-v3/audio_tokenizer/  config.json, model.pth, semantic_teacher/         (--audio_tokenizer_path)
With the Whisper audio tower on (`ensure_tiny_tower_assets`, tests of the tower path only):
    <cache>/tiny-tower-v2/model/              the same, plus a tiny Whisper encoder (encode_whisper_embed)
    <cache>/tiny-tower-v2/audio_tokenizer     -> the tiny-v3 audio tokenizer (a symlink)
    <cache>/tiny-tower-v2/whisper_processor/  WhisperProcessor.save_pretrained (--whisper_processor_path)
The cache dir is $HIGGS_DS_CACHE or ~/.cache/higgs_ds. Concurrent ranks wait on a file lock.
"""
import dataclasses
import json
import os

import numpy as np
import torch

from ..constants import SAMPLE_RATE, cache_root
from ..durable import build_once

TINY_VERSION = "tiny-v3"  # v3: a narrow audio tokenizer (higgs_ds_widths): ~5 MB, encodes far faster than real time
TINY_SEED = 1234
TINY_HEAD_STD = 0.125
TINY_DATA_SAMPLES = 16
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=320, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY_TOWER_VERSION = "tiny-tower-v2"  # v2: links the tiny-v3 audio tokenizer
# Whisper-large-v3 input geometry (128 mel bins, 30 s = 3000 frames -> 1500 positions), tiny width and depth.
TINY_WHISPER = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                    max_source_positions=1500)
# The release's geometry (24 kHz, hop 960 = 25 frames/s, 8 codebooks x 1024) at narrow widths (models/audio_tokenizer.py).
TINY_AUDIO_TOKENIZER = dict(D=64, ratios=[8, 5, 4, 2, 3], sample_rate=SAMPLE_RATE, bins=1024, n_q=8, codebook_dim=16,
                            semantic_techer="hubert_base_general", semantic_sample_rate=16000,
                            downsample_mode="step_down", vq_scale=1, last_layer_semantic=True,
                            higgs_ds_widths=dict(encoder_hidden_size=8, decoder_hidden_size=64, semantic_hidden_size=32))
TINY_TEACHER = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)


@dataclasses.dataclass
class TinyAssets:
    root: str

    @property
    def model_path(self):
        return os.path.join(self.root, "model")

    @property
    def audio_tokenizer_path(self):
        return os.path.join(self.root, "audio_tokenizer")

    @property
    def whisper_processor_path(self):
        return os.path.join(self.root, "whisper_processor")




def tiny_higgs_config(tokenizer, tower=False):
    """A `HiggsAudioConfig` shaped like the release (dual-FFN on every layer, delay pattern, 8x1024 codebooks);
    `tower`: with the Whisper audio tower (`TINY_WHISPER`) on, which the release has off."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|AUDIO_OUT|>", "<|audio_out_bos|>", "<|audio_eos|>")}
    text_config = dict(model_type="llama", **TINY_TEXT, bos_token_id=ids["<|begin_of_text|>"],
                       eos_token_id=ids["<|end_of_text|>"], pad_token_id=ids["<|end_of_text|>"])
    return HiggsAudioConfig(
        text_config=text_config, audio_adapter_type="dual_ffn_fast_forward",
        audio_dual_ffn_layers=list(range(TINY_TEXT["num_hidden_layers"])),
        use_delay_pattern=True, skip_audio_tower=not tower, encode_whisper_embed=tower, encode_audio_in_tokens=True,
        audio_encoder_config=dict(TINY_WHISPER) if tower else None,
        audio_decoder_proj_num_layers=0, audio_num_codebooks=8, audio_codebook_size=1024,
        audio_stream_bos_id=1024, audio_stream_eos_id=1025,
        audio_in_token_idx=ids["<|AUDIO|>"], audio_out_token_idx=ids["<|AUDIO_OUT|>"],
        pad_token_id=ids["<|end_of_text|>"], audio_out_bos_token_id=ids["<|audio_out_bos|>"],
        audio_eos_token_id=ids["<|audio_eos|>"], hidden_size=TINY_TEXT["hidden_size"],
    )


def _build_model_dir(path, tower=False):
    from boson_multimodal.model.higgs_audio import HiggsAudioModel

    from .tiny_text_tokenizer import build_tiny_text_tokenizer

    tok = build_tiny_text_tokenizer()
    torch.manual_seed(TINY_SEED)
    model = HiggsAudioModel(tiny_higgs_config(tok, tower))
    with torch.no_grad():  # a head with room to move: |row| ~ 1 so that LoRA alone can shape the logits
        for head in (model.audio_decoder_proj.audio_lm_head, model.audio_decoder_proj.text_lm_head):
            head.weight.normal_(0.0, TINY_HEAD_STD)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def _build_audio_tokenizer_dir(path):
    from transformers import HubertConfig, HubertModel

    from ..data.synthetic import speech_like
    from ..models.audio_tokenizer import SEMANTIC_TEACHER_SUBDIR, build_audio_tokenizer

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # k-means codebook init all-gathers across a live process group (hangs or fails): build before init
        raise RuntimeError("build the tiny audio tokenizer before torch.distributed is initialised "
                           "(call ensure_tiny_assets() first)")
    teacher = os.path.join(path, SEMANTIC_TEACHER_SUBDIR)
    torch.manual_seed(TINY_SEED)
    HubertModel(HubertConfig(**TINY_TEACHER)).save_pretrained(teacher)
    tk = build_audio_tokenizer(TINY_AUDIO_TOKENIZER, teacher).eval()
    # A fresh quantizer k-means-initialises its codebooks on the first encode; do it here, on fixed audio,
    # so every process that loads this dir encodes identically (training, serve engine, other ranks).
    rng = np.random.default_rng(TINY_SEED)
    warm = np.concatenate([speech_like(rng, 2.0, f0=f0) for f0 in (110.0, 160.0, 220.0)])
    with torch.no_grad():
        tk.encode(warm, SAMPLE_RATE)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(TINY_AUDIO_TOKENIZER, f, indent=2)
    torch.save(tk.state_dict(), os.path.join(path, "model.pth"))


def _build_tiny(tmp):
    _build_model_dir(os.path.join(tmp, "model"))
    _build_audio_tokenizer_dir(os.path.join(tmp, "audio_tokenizer"))


def ensure_tiny_assets(cache_dir=None):
    """Return the tiny assets, building them on first use (~20 s on 2 CPU cores). Safe under concurrent ranks."""
    return TinyAssets(build_once(os.path.join(cache_dir or cache_root(), TINY_VERSION), _build_tiny))


def _build_tiny_tower(tmp, audio_tokenizer_path):
    from .tiny_text_tokenizer import save_tiny_whisper_processor

    _build_model_dir(os.path.join(tmp, "model"), tower=True)
    os.symlink(os.path.abspath(audio_tokenizer_path), os.path.join(tmp, "audio_tokenizer"))
    save_tiny_whisper_processor(os.path.join(tmp, "whisper_processor"), TINY_WHISPER["num_mel_bins"])


def ensure_tiny_tower_assets(cache_dir=None):
    """The tiny model with a tiny Whisper audio tower, its audio tokenizer (the tiny one) and a local
    `WhisperProcessor` (`whisper_processor_path`); built on first use like `ensure_tiny_assets`."""
    tiny = ensure_tiny_assets(cache_dir)
    root = os.path.join(cache_dir or cache_root(), TINY_TOWER_VERSION)
    return TinyAssets(build_once(root, lambda tmp: _build_tiny_tower(tmp, tiny.audio_tokenizer_path)))


def ensure_tiny_data(cache_dir=None):
    """(train.jsonl, val.jsonl) of the embedded synthetic voice-cloning set, built on first use."""
    from ..data.synthetic import create_sample_data

    root = build_once(os.path.join(cache_dir or cache_root(), TINY_VERSION + "-data"),
                      lambda tmp: create_sample_data(tmp, num_samples=TINY_DATA_SAMPLES))
    return os.path.join(root, "train.jsonl"), os.path.join(root, "val.jsonl")

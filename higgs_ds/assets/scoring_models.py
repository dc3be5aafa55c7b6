"""Random-weight `WavLMForXVector` and Whisper dirs, saved locally in the layout `--sim_model` / `--asr_model`
load: the plumbing tests use tiny shapes, bench/score.py the real architectures' shapes (speed depends on the
shape, not on the weights). They carry no quality: never score with them."""
import os

import torch

TINY_WAVLM = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, tdnn_dim=(32, 32), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
                  xvector_output_dim=16, num_buckets=32, max_bucket_distance=64)
WAVLM_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                   feat_extract_norm="layer", do_stable_layer_norm=True, xvector_output_dim=512)
TINY_WHISPER = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                    max_target_positions=64)
WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                        decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                        max_target_positions=448)


def save_random_wavlm(path, seed=0, **shape):
    """`WavLMForXVector` (random init) + its feature extractor config in `path`."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(seed)
    WavLMForXVector(WavLMConfig(**(shape or TINY_WAVLM))).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def save_random_whisper(path, seed=0, languages=(), **shape):
    """`WhisperForConditionalGeneration` (random init) + a byte-level `WhisperProcessor` in `path`. Without
    `languages` its vocabulary has no language tokens (an English-only checkpoint: decoded without a forced
    language); with them (Whisper codes, e.g. ("en", "vi")) it is multilingual: start-of-transcript, one `<|xx|>`
    token per language, task and no-timestamps tokens, and the generation config's `lang_to_id` / `task_to_id`."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from .tiny_text_tokenizer import save_tiny_whisper_processor

    shape = shape or TINY_WHISPER
    specials = ["<|startoftranscript|>", *(f"<|{c}|>" for c in languages), "<|translate|>", "<|transcribe|>",
                "<|notimestamps|>"] if languages else []
    ids = {t: 257 + i for i, t in enumerate(specials)}
    os.makedirs(path, exist_ok=True)
    save_tiny_whisper_processor(path, shape["num_mel_bins"], specials)
    eot = 256  # "<|endoftext|>" in the byte-level vocab
    start = ids.get("<|startoftranscript|>", eot)
    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=257 + len(specials), decoder_start_token_id=start, bos_token_id=eot,
                        eos_token_id=eot, pad_token_id=eot, **shape)
    model = WhisperForConditionalGeneration(cfg).eval()
    if languages:
        gc = model.generation_config
        gc.lang_to_id = {f"<|{c}|>": ids[f"<|{c}|>"] for c in languages}
        gc.task_to_id = {t: ids[f"<|{t}|>"] for t in ("translate", "transcribe")}
        gc.no_timestamps_token_id, gc.is_multilingual = ids["<|notimestamps|>"], True
        gc.forced_decoder_ids, gc.begin_suppress_tokens = None, None
        gc._from_model_config = False  # else from_pretrained rebuilds it from config.json, dropping lang_to_id
    model.save_pretrained(path)
    return path

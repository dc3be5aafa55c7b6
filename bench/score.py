"""Scoring throughput on CPU: clips/s of each `higgs-ds score` backend on espeak-ng speech (tests/evaluation/espeak.py).

    resemblyzer   built-in SIM: one d-vector per clip (SIM of a pair = two of them)
    dnsmos        built-in DNSMOS (speechmos ONNX on onnxruntime CPU, 1 intra-op thread as the scorer uses)
    wavlm         WavLMForXVector with WavLM-large's shape (the seed-tts-eval SIM model), random weights
    whisper       Whisper with --whisper_shape's shape (default small; large-v3 needs ~6 GB fp32), random weights,
                  a fixed --decode_tokens tokens decoded per clip (a sentence): speed depends on shapes, not weights

It also records the espeak-ng set's reference points quoted in docs/EVAL.md (SIM of same- vs different-voice
pairs, DNSMOS OVRL of clean speech vs white noise). Time: the fastest of --repeats passes over the clips after one warm-up clip (the machine is shared: the minimum
is the least disturbed); the load average at the start is recorded with the result.

    python bench/score.py [--clips 4] [--repeats 2] [--whisper_shape small|large-v3|tiny] [--out bench/results/score_cpu.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

WHISPER_SMALL = dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                     decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_mel_bins=80,
                     max_target_positions=448)


def corpus():
    """{(voice, sentence): 16 kHz clip}: 4 espeak-ng voices x 3 sentences."""
    import espeak

    from higgs_ds.data.audio import load_waveform

    paths = espeak.corpus(tempfile.mkdtemp(prefix="bench_score_"), n_sentences=3)
    return {k: load_waveform(p, 16000) for k, p in paths.items()}


def calibration(speech):
    """The espeak-ng set's reference points (docs/EVAL.md): resemblyzer SIM of same- vs different-voice pairs,
    DNSMOS OVRL of the clean clips vs white noise of the same lengths."""
    import itertools

    import numpy as np

    from higgs_ds.evaluation.dnsmos import DnsmosScorer
    from higgs_ds.evaluation.speaker import ResemblyzerEmbedder, cosine

    enc = ResemblyzerEmbedder()
    emb = {k: enc.embed(w) for k, w in speech.items()}
    pairs = list(itertools.combinations(sorted(speech), 2))
    same = [cosine(emb[a], emb[b]) for a, b in pairs if a[0] == b[0]]
    diff = [cosine(emb[a], emb[b]) for a, b in pairs if a[0] != b[0]]
    d, rng = DnsmosScorer(), np.random.default_rng(0)
    clean = [d.score(w)["dnsmos_ovrl"] for w in speech.values()]
    noise = [d.score(np.clip(rng.normal(0, 0.1, len(w)), -1, 1))["dnsmos_ovrl"] for w in speech.values()]

    def stats(x):
        return {"mean": round(float(np.mean(x)), 3), "min": round(float(np.min(x)), 3),
                "max": round(float(np.max(x)), 3), "n": len(x)}

    return {"sim_same_voice": stats(same), "sim_different_voice": stats(diff),
            "dnsmos_ovrl_clean_speech": stats(clean), "dnsmos_ovrl_white_noise": stats(noise)}


def timed(fn, wavs, repeats):
    fn(wavs[0])  # warm-up (numba / ONNX / allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for w in wavs:
            fn(w)
        best = min(best, time.perf_counter() - t)
    return {"clips_per_s": round(len(wavs) / best, 3), "seconds_per_clip": round(best / len(wavs), 3)}


def backends(whisper_shape, decode_tokens):
    """name -> (callable on a 16 kHz clip, description)."""
    import torch
    from transformers import (
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WavLMForXVector,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from higgs_ds.assets.scoring_models import TINY_WHISPER, WAVLM_LARGE, WHISPER_LARGE_V3
    from higgs_ds.assets.tiny_text_tokenizer import save_tiny_whisper_processor
    from higgs_ds.evaluation.asr import WhisperASR
    from higgs_ds.evaluation.dnsmos import DnsmosScorer
    from higgs_ds.evaluation.speaker import ResemblyzerEmbedder, WavLMEmbedder

    torch.manual_seed(0)
    yield "resemblyzer", ResemblyzerEmbedder().embed, "VoiceEncoder (LSTM 3x256), wheel weights"
    yield "dnsmos", DnsmosScorer().score, "sig_bak_ovr.onnx + model_v8.onnx, 1 thread"
    wavlm = WavLMEmbedder(WavLMForXVector(WavLMConfig(**WAVLM_LARGE)), Wav2Vec2FeatureExtractor(do_normalize=True))
    yield "wavlm", wavlm.embed, "WavLMForXVector, WavLM-large shape (24 x 1024), random weights"
    del wavlm
    shape = {"small": WHISPER_SMALL, "large-v3": WHISPER_LARGE_V3, "tiny": TINY_WHISPER}[whisper_shape]
    proc_dir = tempfile.mkdtemp(prefix="bench_whisper_")
    save_tiny_whisper_processor(proc_dir, shape["num_mel_bins"])  # byte-level tokenizer, real feature extractor
    processor = WhisperProcessor.from_pretrained(proc_dir)
    model = WhisperForConditionalGeneration(WhisperConfig(vocab_size=257, decoder_start_token_id=256, bos_token_id=256,
                                                          eos_token_id=256, pad_token_id=256, **shape))
    asr = WhisperASR(model, processor, max_new_tokens=decode_tokens)
    asr.generate_kwargs["min_new_tokens"] = decode_tokens  # a fixed-length transcript: random weights may stop early
    yield "whisper", asr.transcribe, f"Whisper {whisper_shape} shape, random weights, {decode_tokens} tokens decoded"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--whisper_shape", choices=("small", "large-v3", "tiny"), default="small")
    p.add_argument("--decode_tokens", type=int, default=32)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "score_cpu.json"))
    args = p.parse_args(argv)
    import torch

    speech = corpus()
    wavs = list(speech.values())[:args.clips]
    result = {"device": "cpu", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0], "args": vars(args),
              "clip_seconds": round(sum(len(w) for w in wavs) / 16000 / len(wavs), 2), "backends": {}}
    for name, fn, what in backends(args.whisper_shape, args.decode_tokens):
        result["backends"][name] = {**timed(fn, wavs, args.repeats), "what": what}
        print(name, result["backends"][name], flush=True)
    result["espeak_calibration"] = calibration(speech)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

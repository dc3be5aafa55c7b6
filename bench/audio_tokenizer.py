"""The embedded audio tokenizer: size on disk and encoding speed on one CPU core, side by side with the same
configuration at the widths boson-multimodal hard-codes (64 / 1024 / 768: the embedded tokenizer before it was narrowed).

Both are the real `HiggsAudioTokenizer` at the release's geometry (24 kHz, 25 frames/s, 8 codebooks x 1024) with
random weights; speed is the median of `--repeats` encodes of a `--seconds` speech-like clip after one warm-up
encode, with `torch.set_num_threads(1)`. Target: <= 20 MB and >= 20x real time.

    python bench/audio_tokenizer.py [--seconds 10] [--json] [--out bench/results/audio_tokenizer_cpu.json]
"""
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_parser, write_results  # noqa: E402


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def wide_tokenizer(tmp):
    """The embedded configuration at boson's own widths (a 768-wide teacher, as boson's constructor needs)."""
    from transformers import HubertConfig, HubertModel

    from higgs_ds.assets.tiny import TINY_AUDIO_TOKENIZER, TINY_TEACHER
    from higgs_ds.models.audio_tokenizer import WIDTHS_KEY, build_audio_tokenizer

    teacher = os.path.join(tmp, "teacher768")
    HubertModel(HubertConfig(**{**TINY_TEACHER, "hidden_size": 768, "num_attention_heads": 12})).save_pretrained(teacher)
    tok = build_audio_tokenizer({k: v for k, v in TINY_AUDIO_TOKENIZER.items() if k != WIDTHS_KEY}, teacher).eval()
    torch.save(tok.state_dict(), os.path.join(tmp, "model.pth"))
    return tok, dir_bytes(teacher) + os.path.getsize(os.path.join(tmp, "model.pth"))


def encode_seconds(tok, wav, repeats):
    tok.encode(wav, 24000)  # warm-up (and, for a fresh quantizer, its k-means init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode(wav, 24000)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(tok, size, wav, seconds, repeats):
    enc = encode_seconds(tok, wav, repeats)
    return {"bytes": size, "mb": round(size / 2**20, 2), "parameters": sum(p.numel() for p in tok.parameters()),
            "encode_s": round(enc, 4), "realtime_x": round(seconds / enc, 1)}


def main():
    ap = bench_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--repeats", type=int, default=5, help="timed encodes (the median is reported)")
    args = ap.parse_args()
    from higgs_ds.assets import ensure_tiny_assets
    from higgs_ds.data.synthetic import speech_like
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer

    torch.set_num_threads(1)
    wav = speech_like(np.random.default_rng(0), args.seconds, f0=140.0).astype(np.float32)
    tiny = ensure_tiny_assets().audio_tokenizer_path
    t0 = time.perf_counter()
    narrow = load_audio_tokenizer(tiny)
    load_s = time.perf_counter() - t0
    result = {"cpu_threads": 1, "clip_seconds": args.seconds,
              "embedded": {**row(narrow, dir_bytes(tiny), wav, args.seconds, args.repeats), "load_s": round(load_s, 3)}}
    with tempfile.TemporaryDirectory() as tmp:
        wide, size = wide_tokenizer(tmp)
        result["boson_widths"] = row(wide, size, wav, args.seconds, args.repeats)
    result["speedup"] = round(result["boson_widths"]["encode_s"] / result["embedded"]["encode_s"], 1)
    result["size_ratio"] = round(result["boson_widths"]["bytes"] / result["embedded"]["bytes"], 1)
    for name in ("embedded", "boson_widths"):
        r = result[name]
        print(f"{name:13s} {r['mb']:8.2f} MB {r['parameters']:>11,} params  {r['encode_s']:.3f} s per "
              f"{args.seconds:g} s clip = {r['realtime_x']}x real time (1 thread)")
    write_results(result, args.out, args.json)


if __name__ == "__main__":
    main()

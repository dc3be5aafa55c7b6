"""Data pipeline throughput and batching waste.

1. samples/s of building training samples (`VoiceCloningDataset` + `__getitem__`) with codes from the code cache
   vs encoding audio on the fly, on synthetic voice-cloning data and the embedded tiny audio tokenizer (the real
   tokenizer is far heavier, so the real speedup is larger). The cache is filled beforehand (timed separately).
2. Padding waste of the token-budget sampler vs fixed-size random batches on a length-skewed set (lognormal
   lengths), at the same mean number of samples per batch.

    python bench/data.py [--samples 4] [--clip_seconds 1] [--json] [--out bench/results/data_cpu.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def throughput(num_samples, seconds):
    from higgs_ds.assets import ensure_tiny_assets
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.data.code_cache import CodeCache, prepare_codes
    from higgs_ds.data.dataset import VoiceCloningDataset
    from higgs_ds.data.synthetic import create_sample_data
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer
    from higgs_ds.models.loading import load_text_tokenizer

    tiny = ensure_tiny_assets()
    tok, audio_tok = load_text_tokenizer(tiny.model_path), load_audio_tokenizer(tiny.audio_tokenizer_path)
    with tempfile.TemporaryDirectory() as tmp:
        train, _ = create_sample_data(tmp, num_samples=num_samples + 1, val_fraction=1 / (num_samples + 1),
                                      min_seconds=seconds * 0.8, max_seconds=seconds * 1.2)
        samples = list(read_chatml(train))

        def run(**kw):
            t0 = time.perf_counter()
            ds = VoiceCloningDataset(samples, tok, show_progress=False, **kw)
            for i in range(len(ds)):
                ds[i]
            return len(ds) / (time.perf_counter() - t0)

        on_the_fly = run(audio_tokenizer=audio_tok)
        t0 = time.perf_counter()
        prepare_codes([train], tiny.audio_tokenizer_path, os.path.join(tmp, "codes"), audio_tokenizer=audio_tok,
                      show_progress=False)
        prepare_s = time.perf_counter() - t0
        cache = CodeCache.for_tokenizer(tiny.audio_tokenizer_path, os.path.join(tmp, "codes"))
        cached = run(audio_tokenizer=None, code_cache=cache)
    return {"samples": len(samples), "clip_seconds": seconds, "on_the_fly_samples_per_s": round(on_the_fly, 2),
            "cached_samples_per_s": round(cached, 2), "prepare_s": round(prepare_s, 2),
            "cache_speedup": round(cached / on_the_fly, 1)}


def padding(n=5000, budget=16384, seed=0):
    from higgs_ds.data.sampler import TokenBudgetBatchSampler, padding_fraction

    lengths = (np.random.default_rng(seed).lognormal(6.2, 0.6, size=n)).astype(int) + 50
    sampler = TokenBudgetBatchSampler(lengths, budget, seed=seed)
    batches = sampler.global_batches(0)
    size = max(1, round(n / len(batches)))  # same mean batch size
    order = np.random.default_rng(seed).permutation(n)
    fixed = [order[i:i + size] for i in range(0, n, size)]
    return {"lengths": {"p50": int(np.median(lengths)), "max": int(lengths.max())}, "budget_tokens": budget,
            "token_budget_batches": len(batches), "token_budget_padding": round(padding_fraction(batches, lengths), 4),
            "fixed_batch_size": size, "fixed_batches": len(fixed), "fixed_padding": round(padding_fraction(fixed, lengths), 4),
            "fixed_max_batch_tokens": int(max(lengths[b].max() * len(b) for b in fixed))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--clip_seconds", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.add_argument("--out", help="write the result JSON here")
    args = p.parse_args()
    result = {"device": "cpu", "args": vars(args), "throughput": throughput(args.samples, args.clip_seconds), "padding": padding()}
    result["cache_speedup"] = result["throughput"]["cache_speedup"]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Data pipeline throughput and batching waste.

1. samples/s of reading training samples from a prepared dataset (`PreparedDataset.__getitem__`, memory-mapped),
   on synthetic voice-cloning data prepared with the embedded tiny audio tokenizer (the prepare is timed
   separately; the real tokenizer is far heavier).
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
    from higgs_ds.data.prepare import prepare_dataset
    from higgs_ds.data.prepared import PreparedDataset
    from higgs_ds.data.synthetic import create_sample_data

    tiny = ensure_tiny_assets()
    with tempfile.TemporaryDirectory() as tmp:
        train, _ = create_sample_data(tmp, num_samples=num_samples + 1, val_fraction=1 / (num_samples + 1),
                                      min_seconds=seconds * 0.8, max_seconds=seconds * 1.2)
        t0 = time.perf_counter()
        prepare_dataset([train], os.path.join(tmp, "prepared"), tiny.model_path, tiny.audio_tokenizer_path,
                        show_progress=False)
        prepare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = PreparedDataset(os.path.join(tmp, "prepared"))
        for i in range(len(ds)):
            ds[i]
        read = len(ds) / (time.perf_counter() - t0)
    return {"samples": len(ds), "clip_seconds": seconds, "prepared_samples_per_s": round(read, 2),
            "prepare_s": round(prepare_s, 2)}


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
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

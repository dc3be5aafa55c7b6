"""One LoRA training step of the released Higgs Audio v2 configuration (random bf16 weights) on GPUs:
the naive trainer vs higgs_ds, side by side in one run (trainers and batch: bench/common.py).

Batch: voice-cloning shaped sequences of SEQ merged tokens per GPU: per sample a reference clip (unlabeled) and a
target clip (labeled), ~85 % audio; text labels only on the target turn's 3 tokens. Skips cleanly (exit 0, a
message) without a GPU.

    python bench/gpu_step.py --seq 4096,8192 [--ckpt] [--json]      # one GPU, plain torch AdamW on the LoRA params
    python bench/gpu_step.py --num_gpus 8 --seq 4096,8192 [--ckpt]   # 8 GPUs: relaunches itself under the deepspeed
                                                                     # launcher, DeepSpeed ZeRO-2 bf16 (ds_configs/zero2.json)
With --num_gpus N every rank runs the same step on its own batch inside a DeepSpeed engine (gradient all-reduce,
ZeRO-2 partitioned optimizer); tokens/s is the sum over ranks, tokens/s/GPU and peak memory are per rank (max).
Compare with `higgs-ds plan --model_path bench/configs/release --num_gpus N --tokens_per_gpu SEQ` (docs/PERF.md).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, GiB, build, release_config, step_fn, voice_cloning_batch, write_results  # noqa: E402

from higgs_ds.engine.metrics import PEAK_BF16_FLOPS, flops_per_token  # noqa: E402


def engine_for(model, world):
    """(model or DeepSpeed engine, optimizer): plain AdamW on one GPU; ZeRO-2 bf16 on several."""
    params = [p for p in model.parameters() if p.requires_grad]
    if world == 1:
        return model, torch.optim.AdamW(params, lr=1e-4)
    import deepspeed

    from higgs_ds.engine.ds_config import load_ds_config

    cfg, opt_kwargs = load_ds_config(os.path.join(ROOT, "ds_configs", "zero2.json"), micro_batch_size=1,
                                     grad_accum_steps=1, world_size=world, learning_rate=1e-4, total_steps=100,
                                     warmup_steps=1)
    engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(params, **opt_kwargs), config=cfg)
    return engine, opt


def measure(name, ours, ckpt, seq, args, dev, rank, world, finetune="lora"):
    from higgs_ds.data.index_plan import add_plan
    from higgs_ds.data.loaders import to_device

    cfg = release_config()
    model = build(cfg, ours, ckpt, dev, finetune=finetune)
    runner, opt = engine_for(model, world)
    batch = voice_cloning_batch(cfg, seq, max(1, seq // 2048), "cpu", seed=rank)
    batch = to_device(add_plan(batch, cfg) if ours else batch, dev)  # ours: the host-side plan, sync-free step
    step = step_fn(runner, ours)
    for _ in range(args.warmup):
        step(batch, opt)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batch, opt)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    peak = torch.cuda.max_memory_allocated()
    res = dict(name=name, seq=seq, ckpt=ckpt, gpus=world, finetune=finetune, step_ms=round(ms, 1), tokens_per_s=round(seq / ms * 1e3),
               peak_gib=round(peak / GiB, 2), activations_gib=round((peak - base) / GiB, 2),
               loss=float(loss.detach()), flops_per_token=flops_per_token(model, 1.0 if ckpt else 0.0))
    del model, runner, opt, batch
    torch.cuda.empty_cache()
    return res


def gather(res, world):
    """Rank results -> one row: tokens/s summed, step time and peak memory the max over ranks."""
    if world == 1:
        return res
    rows = [None] * world
    torch.distributed.all_gather_object(rows, res)
    if any("error" in r for r in rows):
        return next(r for r in rows if "error" in r)
    out = dict(rows[0], step_ms=max(r["step_ms"] for r in rows), peak_gib=max(r["peak_gib"] for r in rows),
               activations_gib=max(r["activations_gib"] for r in rows))
    out["tokens_per_s"] = round(out["seq"] * world / out["step_ms"] * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", default="4096,8192", help="merged tokens per GPU per step")
    ap.add_argument("--ckpt", action="store_true", help="also run higgs_ds with activation checkpointing")
    ap.add_argument("--finetune", default="lora",
                    help="comma list of --finetune modes for the higgs_ds rows: lora,audio,full (naive: LoRA)")
    ap.add_argument("--num_gpus", type=int, default=1, help="> 1: relaunch under `deepspeed --num_gpus N` (ZeRO-2)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gpu_step.json"))
    ap.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_step.py: no CUDA device, skipped")
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.num_gpus > 1 and world == 1:  # the parent: hand over to the deepspeed launcher
        launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
        argv = [a for a in sys.argv[1:]]
        return subprocess.call([launcher, "--num_gpus", str(args.num_gpus), os.path.abspath(__file__)] + argv)
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import deepspeed
        deepspeed.init_distributed()
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dev = "cuda"
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in gpu), None)
    rows = []
    for seq in [int(s) for s in args.seq.split(",")]:
        variants = [("naive", False, False, "lora")]
        for ft in args.finetune.split(","):
            tag = "" if ft == "lora" else f"[{ft}]"
            variants += [(f"higgs_ds{tag}", True, False, ft)] + ([(f"higgs_ds+ckpt{tag}", True, True, ft)]
                                                                 if args.ckpt else [])
        for name, ours, ckpt, ft in variants:
            try:
                r = measure(name, ours, ckpt, seq, args, dev, rank, world, ft)
            except torch.cuda.OutOfMemoryError:
                r = dict(name=name, seq=seq, ckpt=ckpt, gpus=world, error="OOM")
                torch.cuda.empty_cache()
            r = gather(r, world)
            if "tokens_per_s" in r and peak:
                r["mfu"] = round(r["tokens_per_s"] / world * r["flops_per_token"] / peak, 3)
            rows.append(r)
            if rank == 0:
                print(json.dumps(r), flush=True)
    if rank:
        return 0
    print(f"\n{gpu}, bf16, LoRA r=16 on 280 modules, {world} GPU(s)" + (", DeepSpeed ZeRO-2" if world > 1 else ""))
    print(f"{'variant':<16}{'seq/GPU':>8}{'step ms':>10}{'tok/s':>9}{'tok/s/GPU':>11}{'MFU':>7}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['name']:<16}{r['seq']:>8}{r.get('step_ms', 'OOM'):>10}{r.get('tokens_per_s', ''):>9}"
              f"{round(r['tokens_per_s'] / world) if 'tokens_per_s' in r else '':>11}{r.get('mfu', ''):>7}"
              f"{r.get('peak_gib', ''):>10}")
    summary = {"device": gpu, "gpus": world, "rows": rows}
    for seq in sorted({r["seq"] for r in rows}):
        n = next((r for r in rows if r["seq"] == seq and r["name"] == "naive" and "step_ms" in r), None)
        o = next((r for r in rows if r["seq"] == seq and r["name"] == "higgs_ds" and "step_ms" in r), None)
        if n and o:
            summary[f"tokens_per_s_ratio_{seq}"] = round(o["tokens_per_s"] / n["tokens_per_s"], 3)
            summary[f"peak_mem_ratio_{seq}"] = round(n["peak_gib"] / o["peak_gib"], 3)
    return write_results(summary, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""One full LoRA training step (forward + backward + AdamW step) on CPU: the naive trainer vs higgs_ds, side by side.

A mid-size random Higgs config (default hidden 384, 4 layers, intermediate 1024, the real text vocab 128256 and
8 x 1026 audio heads), fp32, voice-cloning shaped rows of --tokens merged tokens (bench/common.py). Four cells:

    naive          peft LoRA, `model.forward` full logits + plain CE, no activation checkpointing
    naive+ckpt     the same with layer-wise activation checkpointing (higgs_ds/engine/activation_checkpointing.py)
    fused          hidden-states-only forward + our fused loss (higgs_ds/loss), no checkpointing
    higgs_ds       fused + activation checkpointing (what `higgs-ds train --activation_checkpointing all` runs)

Memory: each cell runs in its own subprocess with glibc's mmap threshold at 1 MiB (freed tensors go back to the OS,
so the resident set follows live tensors); peak = VmHWM (reset after imports, again after the warm-up) minus the RSS after imports (torch, libs),
i.e. everything the step allocates: weights, LoRA + AdamW states, activations, loss buffers. `model` is the rise
after building the model and optimizer, before the first step; `step` = peak - model, what the training step adds,
printed beside `higgs-ds plan`'s prediction of it (higgs_ds/commands/plan.py). With --warmup >= 1 the peak is that of
the timed steps, the steady state the plan predicts (AdamW's moments, created by the first optimizer step, sit under
the activations), less `runtime`: what the warm-up left resident beyond the model and the optimizer states (the CPU
runtime's one-time state, ~20-30 MiB; a GPU's max_memory_allocated leaves such state out too). --warmup 0: the first
step, lower by the moments. Time: the fastest of --steps steps after --warmup (the machine is shared: the minimum
is the least disturbed).

    python bench/step.py [--tokens 2048] [--hidden 384 --layers 4 --intermediate 1024] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MID, ROOT, GiB, build, higgs_config, step_fn, voice_cloning_batch, write_results  # noqa: E402

VARIANTS = {"naive": (False, False), "naive+ckpt": (False, True), "fused": (True, False), "higgs_ds": (True, True)}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def config_from(args):
    heads = max(1, args.hidden // 64)
    return higgs_config(args.hidden, args.layers, heads, max(1, heads // 2), 64, args.intermediate)


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _peak_rss_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _runtime_bytes(opt):
    """RSS after the warm-up less AdamW's states: with the model's, the rest is the CPU runtime's one-time state of
    the first backward and optimizer step (kernel caches, library pages, arenas; no tensor holds it)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS
    return rss_bytes() - sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def run_one(variant, args):
    """In a subprocess: the cell's step time and memory (bytes above the post-import RSS)."""
    ours, ckpt = VARIANTS[variant]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = config_from(args)
    import boson_multimodal.model.higgs_audio  # noqa: F401,E401 - before the baseline

    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools up before the baseline
    base = rss_bytes()
    _reset_peak_rss()  # a child forked from a large process (pytest) inherits its ru_maxrss: measure VmHWM instead
    model = build(cfg, ours, ckpt, "cpu", torch.float32, args.lora_r, args.finetune if ours else "lora")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = voice_cloning_batch(cfg, args.tokens, max(1, args.tokens // 2048), "cpu")
    if ours:  # the training step: the batch's host-side index plan (sync-free forward, higgs_ds/data/index_plan.py)
        from higgs_ds.data.index_plan import add_plan
        batch = add_plan(batch, cfg)
    model_bytes = rss_bytes() - base
    step = step_fn(model, ours)
    times, runtime = [], 0
    for i in range(args.warmup + args.steps):
        if i == args.warmup > 0:  # steady state from here: measure the timed steps only
            runtime = _runtime_bytes(opt) - base - model_bytes
            _reset_peak_rss()
        t0 = time.perf_counter()
        loss = step(batch, opt)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = _peak_rss_bytes() - base - runtime
    return dict(variant=variant, ckpt=ckpt, fused_loss=ours, tokens=args.tokens, step_s=min(times),
                finetune=args.finetune if ours else "lora",
                peak_bytes=peak, model_bytes=model_bytes, runtime_bytes=runtime, loss=float(loss.detach()),
                params=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def spawn(variant, args, argv):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    cmd = [sys.executable, os.path.abspath(__file__), "--one", variant] + argv
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if r.returncode:
        raise RuntimeError(f"{variant} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048, help="merged tokens per row (one row per step)")
    ap.add_argument("--hidden", type=int, default=MID["hidden_size"])
    ap.add_argument("--layers", type=int, default=MID["num_hidden_layers"])
    ap.add_argument("--intermediate", type=int, default=MID["intermediate_size"])
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--finetune", choices=("lora", "audio", "full"), default="lora",
                    help="what is trained (higgs_ds/models/finetune.py); audio/full apply to the fused cells only")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "step_cpu.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    child_argv = [a for a in argv if a != "--json"]
    rows = []
    for v in args.variants.split(","):
        rows.append(spawn(v, args, child_argv))
        rows[-1]["tokens_per_s"] = args.tokens / rows[-1]["step_s"]
    by = {r["variant"]: r for r in rows}
    from higgs_ds.commands.plan import estimate

    cfg = config_from(args).to_dict()
    for r in rows:
        est = estimate(cfg, args.tokens, ckpt="all" if r["ckpt"] else "off", loss="fused" if r["fused_loss"] else "naive",
                       dtype="fp32", lora_r=args.lora_r, finetune=args.finetune if r["fused_loss"] else "lora")
        r["plan_step_bytes"] = est["total_gib"] * GiB - 4 * est["params"]
    print(f"CPU ({torch.get_num_threads()} threads), fp32, hidden {args.hidden}, {args.layers} layers, intermediate "
          f"{args.intermediate}, vocab 128256, audio 8x1026; LoRA r={args.lora_r} ({rows[0]['trainable']:,} of "
          f"{rows[0]['params']:,} parameters); {args.tokens} tokens per step")
    print("memory: peak RSS (VmHWM) of the cell's timed steps minus its RSS after imports and the runtime state the "
          "warm-up left; model = weights + LoRA + optimizer before the first step (glibc mmap threshold 1 MiB)")
    print(f"{'variant':<12}{'ckpt':>6}{'loss':>7}{'step s':>9}{'tok/s':>9}{'peak GiB':>10}{'model GiB':>11}"
          f"{'step GiB':>10}{'plan GiB':>10}")
    for r in rows:
        print(f"{r['variant']:<12}{'on' if r['ckpt'] else 'off':>6}{'fused' if r['fused_loss'] else 'full':>7}"
              f"{r['step_s']:>9.2f}{r['tokens_per_s']:>9.0f}{r['peak_bytes'] / GiB:>10.2f}{r['model_bytes'] / GiB:>11.2f}"
              f"{(r['peak_bytes'] - r['model_bytes']) / GiB:>10.3f}{r['plan_step_bytes'] / GiB:>10.3f}")
    summary = {"device": "cpu", "args": {k: v for k, v in vars(args).items() if k not in ("one", "json", "out")},
               "memory_method": "VmHWM of the timed steps minus post-import RSS and the warm-up's runtime "
                                "state, one subprocess per cell, MALLOC_MMAP_THRESHOLD_=1MiB",
               "rows": rows}
    if "naive" in by and "higgs_ds" in by:
        n, o = by["naive"], by["higgs_ds"]
        summary["tokens_per_s_ratio"] = round(o["tokens_per_s"] / n["tokens_per_s"], 3)
        summary["peak_mem_ratio"] = round(n["peak_bytes"] / o["peak_bytes"], 3)
        print(f"higgs_ds vs naive: {summary['tokens_per_s_ratio']:.2f}x tokens/s, {summary['peak_mem_ratio']:.2f}x "
              "less peak memory")
    if "fused" in by and "naive" in by:  # the loss alone, and checkpointing alone (the two comparisons of docs/PERF.md)
        summary["fused_vs_naive_loss"] = {"tokens_per_s_ratio": round(by["naive"]["step_s"] / by["fused"]["step_s"], 3),
                                          "peak_mem_ratio": round(by["naive"]["peak_bytes"] / by["fused"]["peak_bytes"], 3)}
    if "fused" in by and "higgs_ds" in by:
        summary["ckpt_on_vs_off"] = {"step_time_ratio": round(by["higgs_ds"]["step_s"] / by["fused"]["step_s"], 3),
                                     "peak_mem_ratio": round(by["fused"]["peak_bytes"] / by["higgs_ds"]["peak_bytes"], 3)}
    return write_results(summary, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""A DPO step vs an SFT step on the same tokens: peak memory and step time side by side, each cell in its own process.

The same batch for every cell: two voice-cloning rows of --tokens / 2 merged tokens each (bench/common.py), with
their host-side index plan (the sync-free step). SFT trains on both rows; DPO reads them as one pair (chosen row,
rejected row) through one forward, and scores each row's target clip (loss/preference.py). Cells:

    sft_lora           LoRA r=16 (attn_mlp_audio), SFT's fused loss
    dpo_lora_adapter   the same model, DPO with the adapter-disabled reference: + a forward without grad
    sft_full           --finetune full (every weight, AdamW), SFT's fused loss
    dpo_full_stored    the same model, DPO with stored reference log-probs: no reference forward

CPU (default): the embedded tiny model's config (random weights, fp32) or --hidden/--layers/--intermediate (a
mid-size config as bench/step.py's); memory as bench/step.py measures it (VmHWM of the timed steps less the RSS after
imports and the warm-up's runtime state, glibc mmap threshold 1 MiB); time: the fastest of --steps after --warmup.
The claim is the ratios DPO / SFT (memory, time) per fine-tuning mode, beside `higgs-ds plan --stage dpo`'s.

    python bench/dpo_step.py --json                           # tiny model -> bench/results/dpo_vs_sft_cpu.json
    python bench/dpo_step.py --device cuda --config release --tokens 8192 --cells sft_lora,dpo_lora_adapter \\
        --out bench/results/dpo_vs_sft_h200.json              # one GPU, bf16, released config (LoRA cells)

GPU mode: the released config (bench/configs/release) in bf16 with random weights; memory = max_memory_allocated of
the timed steps (reset after the warm-up), time = CUDA-synchronised wall time. `--finetune full` of the released
model needs ~93 GB of AdamW states on one GPU: run the LoRA cells there (the stored reference under LoRA:
`--cells sft_lora,dpo_lora_adapter,dpo_lora_stored`).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, GiB, bench_parser, build, higgs_config, release_config, voice_cloning_batch  # noqa: E402
from step import _peak_rss_bytes, _reset_peak_rss, _runtime_bytes, rss_bytes  # noqa: E402

CELLS = {"sft_lora": ("sft", "lora", None), "dpo_lora_adapter": ("dpo", "lora", "adapter"),
         "sft_full": ("sft", "full", None), "dpo_full_stored": ("dpo", "full", "stored"),
         "dpo_lora_stored": ("dpo", "lora", "stored")}
DEFAULT_CELLS = "sft_lora,dpo_lora_adapter,sft_full,dpo_full_stored"


def model_config(args):
    """The tiny default's config (`--config tiny`), the released one (`release`), or a mid-size one (`mid`)."""
    if args.config == "release":
        return release_config()
    if args.config == "mid":
        heads = max(1, args.hidden // 64)
        return higgs_config(args.hidden, args.layers, heads, max(1, heads // 2), 64, args.intermediate)
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig

    from higgs_ds.assets import ensure_tiny_assets

    cfg = HiggsAudioConfig.from_pretrained(ensure_tiny_assets().model_path)
    cfg._attn_implementation = "sdpa"
    return cfg


def pair_rows(cfg, tokens, dev):
    """Two rows of tokens // 2 merged tokens (chosen, rejected) with their plan and pair index."""
    from higgs_ds.constants import PAIR_INDEX_KEY
    from higgs_ds.data.index_plan import add_plan

    half = max(64, tokens // 2)
    rows = [voice_cloning_batch(cfg, half, 1, "cpu", seed=s) for s in (0, 1)]
    batch = {k: torch.cat([r[k] for r in rows], 1 if k.startswith(("audio_out_ids", "label_audio")) else 0)
             for k in rows[0] if k not in ("audio_out_ids_start", "audio_out_ids_start_group_loc")}
    n = rows[0]["audio_out_ids"].shape[1]
    batch["audio_out_ids_start"] = torch.cat([rows[0]["audio_out_ids_start"], rows[1]["audio_out_ids_start"] + n])
    batch["audio_out_ids_start_group_loc"] = torch.cat([torch.zeros_like(rows[0]["audio_out_ids_start"]),
                                                        torch.ones_like(rows[1]["audio_out_ids_start"])])
    batch = add_plan(batch, cfg)
    batch[PAIR_INDEX_KEY] = torch.zeros(1, dtype=torch.long)
    return {k: v.to(dev) for k, v in batch.items()}


def loss_fn(model, stage, reference, dev):
    """batch -> loss of the cell: SFT's `compute_loss`, or `preference_loss` with its reference."""
    from higgs_ds.constants import PAIR_INDEX_KEY
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.loss.preference import PreferenceConfig, preference_loss, stored_reference

    table = torch.tensor([[-900.0, -950.0]], dtype=torch.float64, device=dev)
    if stage == "sft":
        return lambda b: compute_loss(model, {k: v for k, v in b.items() if k != PAIR_INDEX_KEY}, LossConfig()).loss
    pref = PreferenceConfig(beta=0.1)
    return lambda b: preference_loss(model, b, pref, stored_reference(table, b) if reference == "stored" else None).loss


def _timed(dev):
    if dev == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_one(name, args):
    """In a subprocess: the cell's step time and memory (CPU: bytes above the post-import RSS; GPU: allocated)."""
    stage, finetune, reference = CELLS[name]
    dev, dtype = args.device, torch.bfloat16 if args.device == "cuda" else torch.float32
    cfg = model_config(args)
    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools up before the baseline
    base = rss_bytes()
    _reset_peak_rss()
    model = build(cfg, True, args.ckpt, dev, dtype, 16, finetune)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = pair_rows(cfg, args.tokens, dev)
    model_bytes = torch.cuda.memory_allocated() if dev == "cuda" else rss_bytes() - base
    step, times, runtime = loss_fn(model, stage, reference, dev), [], 0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            else:
                runtime = _runtime_bytes(opt) - base - model_bytes
                _reset_peak_rss()
        t0 = _timed(dev)
        loss = step(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times.append(_timed(dev) - t0)
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else _peak_rss_bytes() - base - runtime
    return dict(cell=name, stage=stage, finetune=finetune, reference=reference, tokens=2 * max(64, args.tokens // 2),
                step_s=min(times), peak_bytes=peak, model_bytes=model_bytes, loss=float(loss.detach()),
                params=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def spawn(name, argv, timeout=1800):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name] + argv, capture_output=True,
                       text=True, env=env, timeout=timeout, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def planned(cfg, row, args):
    """`higgs-ds plan --stage ...`'s prediction of the step's memory above the model (bytes) and FLOPs per token."""
    from higgs_ds.commands.plan import estimate

    dtype = "bf16" if args.device == "cuda" else "fp32"
    est = estimate(cfg.to_dict(), row["tokens"], ckpt="all" if args.ckpt else "off", dtype=dtype,
                   finetune=row["finetune"], stage=row["stage"], reference=row["reference"] or "adapter")
    return est["total_gib"] * GiB - (2 if dtype == "bf16" else 4) * est["params"], est["flops_per_token"]


def ratios(by, plans):
    """DPO / SFT per fine-tuning mode: measured peak (and step memory above the model), time; the plan's."""
    out = {}
    for dpo, sft in (("dpo_lora_adapter", "sft_lora"), ("dpo_full_stored", "sft_full"), ("dpo_lora_stored", "sft_lora")):
        if dpo in by and sft in by:
            d, s = by[dpo], by[sft]
            out[f"{dpo}_vs_{sft}"] = {
                "peak_mem_ratio": round(d["peak_bytes"] / s["peak_bytes"], 3),
                "step_mem_ratio": round((d["peak_bytes"] - d["model_bytes"]) / (s["peak_bytes"] - s["model_bytes"]), 3),
                "step_time_ratio": round(d["step_s"] / s["step_s"], 3),
                "plan_step_mem_ratio": round(plans[dpo][0] / plans[sft][0], 3),
                "plan_step_time_ratio": round(plans[dpo][1] / plans[sft][1], 3)}
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = bench_parser(__doc__, os.path.join(ROOT, "bench", "results", "dpo_vs_sft_cpu.json"))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--config", choices=("tiny", "mid", "release"), default="tiny")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--tokens", type=int, default=8192, help="merged tokens per step, both rows (sequences) together")
    p.add_argument("--ckpt", action="store_true", help="layer-wise activation checkpointing")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cells", default=DEFAULT_CELLS, help=f"subset of {','.join(CELLS)}")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    child = [a for a in argv if a != "--json"]
    if "--out" in child:
        i = child.index("--out")
        del child[i:i + 2]
    rows = [spawn(c, child) for c in args.cells.split(",")]
    cfg = model_config(args)
    plans = {r["cell"]: planned(cfg, r, args) for r in rows}
    for r in rows:
        r["plan_step_bytes"], r["plan_flops_per_token"] = plans[r["cell"]]
        step_bytes = r["peak_bytes"] - r["model_bytes"]
        print(f"{r['cell']:<18} step {r['step_s']:.3f} s  peak {r['peak_bytes'] / GiB:.3f} GiB  model "
              f"{r['model_bytes'] / GiB:.3f} GiB  step {step_bytes / GiB:.4f} GiB (plan {r['plan_step_bytes'] / GiB:.4f})",
              flush=True)
    summary = {"device": args.device, "config": args.config, "tokens": args.tokens, "ckpt": args.ckpt,
               "memory_method": "cpu: VmHWM of the timed steps minus post-import RSS and the warm-up's runtime state, "
                                "one subprocess per cell; cuda: max_memory_allocated of the timed steps",
               "time_method": f"fastest of {args.steps} steps after {args.warmup} warm-up", "rows": rows,
               "ratios": ratios({r["cell"]: r for r in rows}, plans)}
    for k, v in summary["ratios"].items():
        print(f"{k}: {v}")
    from common import write_results

    return write_results(summary, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())

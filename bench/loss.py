"""Peak memory and time of the loss heads: naive (full logits + plain_loss) vs fused (higgs_ds.loss).

Real head sizes (hidden 3072, vocab 128256, 8 x 1026 audio classes), heads frozen as under LoRA, hidden
states requiring grad. A micro-batch of T tokens: 5% text (3% of T labeled), then a reference clip (45%,
unlabeled) and a target clip (50%, labeled). Each (method, T) runs in its own subprocess; on CPU the peak is
the rise of ru_maxrss over the loss forward + backward (large blocks mmapped), on CUDA the rise of max_memory_allocated.

    python bench/loss.py [--device cpu|cuda] [--tokens 2048,4096,8192] [--json]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from higgs_ds.constants import IGNORE_INDEX as IGNORE  # noqa: E402

H, V, K, C = 3072, 128256, 8, 1026
EXTRAS = {"cce": "cut_cross_entropy", "liger": "liger_kernel"}


def make_inputs(T, device, dtype, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    W = torch.empty(V, H, dtype=dtype, device=device).normal_(0, 0.02)  # in place: no transient peak
    Wa = torch.empty(K * C, H, dtype=dtype, device=device).normal_(0, 0.02)
    h = torch.randn(1, T, H, generator=g).to(device, dtype).requires_grad_()
    n_text, n_ref = int(0.05 * T), int(0.45 * T)
    labels = torch.full((1, T), IGNORE, dtype=torch.long)
    text_pos = torch.randperm(n_text, generator=g)[: int(0.03 * T)]
    labels[0, text_pos] = torch.randint(0, V, (len(text_pos),), generator=g)
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, n_text:] = True
    n_audio = T - n_text
    lab_audio = torch.full((K, n_audio), IGNORE, dtype=torch.long)
    lab_audio[:, n_ref + 1:] = torch.randint(0, C, (K, n_audio - n_ref - 1), generator=g)
    outputs = SimpleNamespace(expanded_labels=labels.to(device), audio_out_mask=mask.to(device))
    batch = {"label_audio_ids": lab_audio.to(device), "audio_out_ids_start": torch.tensor([0, n_ref], device=device)}
    return h, W, Wa, outputs, batch


def loss_fn(method, h, W, Wa, outputs, batch):
    import torch.nn.functional as F

    from higgs_ds.loss import LossConfig, fused_head_loss
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from tests.loss.reference_loss import plain_loss  # the naive reference lives with the tests
    if method == "naive":  # what HiggsAudioModel.forward + plain_loss do
        logits = F.linear(h, W)
        audio_logits = F.linear(h[outputs.audio_out_mask], Wa).view(-1, K, C).float()
        full = SimpleNamespace(logits=logits, audio_logits=audio_logits, expanded_labels=outputs.expanded_labels)
        return plain_loss(full, batch).loss
    if method == "fused":
        return fused_head_loss(h, outputs, batch, W, Wa, K, LossConfig()).loss
    return extra_loss(method, h, W, Wa, outputs, batch)


def extra_loss(method, h, W, Wa, outputs, batch):
    """Text head through cut-cross-entropy / Liger on the labeled rows, audio head through ours."""
    from higgs_ds.data.alignment import text_rows
    pos, tgt = text_rows(outputs.expanded_labels, h.shape[:2], h.device)
    rows = h.reshape(-1, H).index_select(0, pos)
    if method == "cce":
        from cut_cross_entropy import linear_cross_entropy
        text = linear_cross_entropy(rows, W, tgt)
    else:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        text = LigerFusedLinearCrossEntropyLoss()(W, rows, tgt)
    no_text = SimpleNamespace(expanded_labels=None, audio_out_mask=outputs.audio_out_mask)
    return text + fused_head_loss_audio(h, no_text, batch, W, Wa)


def fused_head_loss_audio(h, outputs, batch, W, Wa):
    from higgs_ds.loss import LossConfig, fused_head_loss
    return fused_head_loss(h, outputs, batch, W, Wa, K, LossConfig(text_loss_weight=0.0)).loss


def run_one(method, T, device, repeats):
    """In a subprocess: peak memory rise (bytes) and median time (s) of one loss forward + backward."""
    import torch
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    inputs = make_inputs(T, device, dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times, peak = [], None
    for i in range(repeats + (1 if device == "cuda" else 0)):  # CUDA: one warm-up; CPU: the first run is measured
        inputs[0].grad = None
        if device == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        sync()
        t0 = time.perf_counter()
        loss_fn(method, *inputs).backward()
        sync()
        dt = time.perf_counter() - t0
        if device == "cuda":
            p = torch.cuda.max_memory_allocated() - base
        else:
            p = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        if device == "cuda" and i == 0:
            continue
        times.append(dt)
        peak = p if peak is None else max(peak, p)
    return {"peak_bytes": int(peak), "time_s": sorted(times)[len(times) // 2]}


def available_bytes(device):
    if device == "cuda":
        import torch
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def extras_status():
    status = {}
    for name, mod in EXTRAS.items():
        try:
            __import__(mod)
            __import__("triton")
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 - report why, whatever it is
            status[name] = f"unavailable ({type(e).__name__}: {e})"
    return status


def spawn(method, T, args):
    cmd = [sys.executable, __file__, "--one", method, str(T), "--device", args.device, "--repeats", str(args.repeats)]
    # glibc: serve blocks >= 1 MiB by mmap and unmap them on free, so ru_maxrss follows live tensors
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_s, env=env)
    if r.returncode:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1][:200]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt_gib(b):
    return f"{b / 2**30:8.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tokens", default="2048,4096,8192")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default cpu 1, cuda 5)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="skip naive cases predicted to overrun this")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument("--out", default=None, help="results file (default bench/results/loss_<device>.json)")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.device == "cpu" else 5)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.device, args.repeats)))
        return

    extras = extras_status() if args.device == "cuda" else {
        n: "unavailable (needs triton, which the CPU torch build lacks)" for n in EXTRAS}
    methods = ["fused", "naive"] + [n for n, s in extras.items() if s == "ok"]
    start, rows, naive_rate = time.perf_counter(), [], None
    for T in [int(t) for t in args.tokens.split(",")]:
        row = {"tokens": T}
        for m in methods:
            if m == "naive":
                need = 4 * T * V * (4 if args.device == "cpu" else 2)  # logits, log-probs and their grads
                left = args.budget_s - (time.perf_counter() - start)
                if need > 0.8 * available_bytes(args.device):
                    row[m] = {"skipped": f"needs ~{need / 2**30:.1f} GiB, more than 80% of what is free"}
                    continue
                if naive_rate and naive_rate * T * 1.5 > left:
                    row[m] = {"skipped": f"predicted {naive_rate * T:.0f} s, {left:.0f} s of budget left"}
                    continue
            row[m] = spawn(m, T, args)
            if m == "naive" and "time_s" in row[m]:
                naive_rate = row[m]["time_s"] / T
        f, n = row["fused"], row.get("naive", {})
        if "peak_bytes" in f and "peak_bytes" in n:
            row["peak_mem_ratio"] = n["peak_bytes"] / max(f["peak_bytes"], 1)
            row["time_ratio"] = f["time_s"] / n["time_s"]
        rows.append(row)

    print(f"device={args.device} H={H} V={V} audio={K}x{C} heads frozen; text labels 3%, labeled audio 50%")
    print(f"{'tokens':>6} | {'method':>6} | {'peak GiB':>8} | {'time ms':>9} | note")
    for row in rows:
        for m in methods:
            r = row.get(m, {})
            if "peak_bytes" in r:
                print(f"{row['tokens']:>6} | {m:>6} | {fmt_gib(r['peak_bytes'])} | {1e3 * r['time_s']:9.1f} |")
            else:
                print(f"{row['tokens']:>6} | {m:>6} | {'-':>8} | {'-':>9} | {r.get('skipped') or r.get('error')}")
        if "peak_mem_ratio" in row:
            print(f"{row['tokens']:>6} | naive/fused peak memory {row['peak_mem_ratio']:.1f}x, "
                  f"fused/naive time {row['time_ratio']:.3f}")
    for n, s in extras.items():
        if s != "ok":
            print(f"{n}: {s}")
    summary = {"device": args.device, "repeats": args.repeats, "extras": extras, "cases": rows,
               "wall_s": round(time.perf_counter() - start, 1)}
    four = next((r for r in rows if r["tokens"] == 4096), {})
    summary.update({k: four.get(k) for k in ("peak_mem_ratio", "time_ratio")})
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"loss_{args.device}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(summary, fh, indent=2)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()

"""Count host-synchronising ops in one training forward + backward, with the torch profiler on the CPU.

    python bench/syncs.py --json                  # layers 2 and 8 -> bench/results/syncs_cpu.json
    python bench/syncs.py --layers 2 --json --out /tmp/s.json

An op that needs a device value on the host (`nonzero` and boolean-mask indexing, which call it, `item` /
`_local_scalar_dense`, `is_nonzero`, `masked_select`, `unique`, `equal`, ...) makes the host wait for the GPU's
queue to drain. On the CPU the same ops run, so counting them in a CPU profile counts the syncs a GPU step would
have (an op nested in another counted op is counted once). Not visible here: blocking host-to-device copies of
pageable memory (the plan is pinned and copied with non_blocking on CUDA).

Steps (random weights, LoRA r=16 on attn+mlp+audio_mlp, fp32, a padded 2-row batch with 4 clips per row):
  higgs_ds  = the training step: batch with its host-side index plan, hidden-states forward + fused loss
  naive     = `model.forward` full logits + plain CE (tests/loss/reference_loss.py)
  (the file also holds `higgs_ds_without_plan`: our fused loss over boson's own forward)
The last stdout line with --json: {"layers": [...], "higgs_ds": [...], "naive": [...]}.
"""
import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from common import ROOT, build, higgs_config, voice_cloning_batch  # noqa: E402

SYNC_OPS = frozenset({"aten::nonzero", "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero",
                      "aten::masked_select", "aten::unique", "aten::_unique", "aten::_unique2",
                      "aten::unique_consecutive", "aten::unique_dim", "aten::equal", "aten::allclose"})
SMALL = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128)


def padded_batch(cfg, lengths=(256, 200), samples_per_row=2):
    """Right-padded rows of the given merged lengths, as the collator lays them out (clips concatenated)."""
    rows = [voice_cloning_batch(cfg, n, samples_per_row, "cpu", seed=i) for i, n in enumerate(lengths)]
    width = max(r["input_ids"].shape[1] for r in rows)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    starts, offset = [], 0
    for i, r in enumerate(rows):
        starts.append(r["audio_out_ids_start"] + offset)
        offset += r["audio_out_ids"].shape[1]
    return dict(
        input_ids=torch.cat([pad(r["input_ids"], cfg.pad_token_id) for r in rows]),
        attention_mask=torch.cat([pad(r["attention_mask"], 0) for r in rows]),
        label_ids=torch.cat([pad(r["label_ids"], -100) for r in rows]),
        audio_out_ids=torch.cat([r["audio_out_ids"] for r in rows], 1),
        audio_out_ids_start=torch.cat(starts),
        audio_out_ids_start_group_loc=torch.cat([torch.full_like(r["audio_out_ids_start"], i)
                                                 for i, r in enumerate(rows)]),
        label_audio_ids=torch.cat([r["label_audio_ids"] for r in rows], 1))


def count_syncs(prof):
    """(total, {op: count}) of sync ops in a finished profile, each outermost one counted once."""
    counts = collections.Counter()
    for evt in prof.events():
        if evt.name not in SYNC_OPS:
            continue
        parent = evt.cpu_parent
        while parent is not None and parent.name not in SYNC_OPS:
            parent = parent.cpu_parent
        if parent is None:
            counts[evt.name] += 1
    return sum(counts.values()), dict(sorted(counts.items()))


def step_fn(model, kind):
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.sync_free import PLAN_KEY
    from tests.loss.reference_loss import plain_loss

    def step(batch):
        if kind != "higgs_ds":
            batch = {k: v for k, v in batch.items() if k != PLAN_KEY}
        if kind == "naive":
            return plain_loss(model(**batch), batch).loss
        return compute_loss(model, batch, LossConfig()).loss
    return step


def measure(layers, kind):
    """Sync ops of one forward + backward (after one unprofiled warm-up step)."""
    from higgs_ds.data.plan import add_plan

    cfg = higgs_config(num_hidden_layers=layers, **SMALL)
    model = build(cfg, ours=kind != "naive", ckpt=False, dev="cpu", dtype=torch.float32)
    batch = add_plan(padded_batch(cfg), cfg)
    step = step_fn(model, kind)
    step(batch).backward()
    model.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(batch).backward()
    if not any("Backward" in e.name for e in prof.events()):
        raise RuntimeError("the profile holds no autograd backward ops: the count would miss the backward")
    return count_syncs(prof)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[2, 8], help="decoder depths to measure")
    p.add_argument("--json", action="store_true", help="print the summary as the last stdout line")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "syncs_cpu.json"),
                   help="where the results (with per-op counts) are written")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    summary = {"layers": args.layers}
    detail = {}
    for kind in ("higgs_ds", "naive", "higgs_ds_without_plan"):
        results = [measure(n, kind) for n in args.layers]
        summary[kind] = [total for total, _ in results]
        detail[kind] = {str(n): ops for n, (_, ops) in zip(args.layers, results)}
        print(f"{kind:>22}: " + ", ".join(f"{n} layers {t} syncs {ops}" for n, (t, ops) in zip(args.layers, results)),
              flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({**summary, "per_op": detail, "device": "cpu", "torch": torch.__version__,
                   "what": "host-synchronising ops in one training forward + backward (bench/syncs.py)"}, f, indent=1)
    if args.json:
        print(json.dumps({k: summary[k] for k in ("layers", "higgs_ds", "naive")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Count host-synchronising ops in one training forward + backward, with the torch profiler on the CPU.

    python bench/syncs.py --json                  # layers 2 and 8 -> bench/results/syncs_cpu.json
    python bench/syncs.py --layers 2 --json --out /tmp/s.json
    python bench/syncs.py --train_step 4 --activation_checkpointing all    # one train.py cell, this process

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
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

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


def _ancestors(evt):
    parent = evt.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def count_syncs(prof, within=None):
    """(total, {op: count}) of sync ops in a finished profile, each outermost one counted once; `within`: only
    those under a `record_function` range of one of these names."""
    counts = collections.Counter()
    for evt in prof.events():
        if evt.name not in SYNC_OPS:
            continue
        names = [p.name for p in _ancestors(evt)]
        if any(n in SYNC_OPS for n in names) or (within and not set(names) & set(within)):
            continue
        counts[evt.name] += 1
    return sum(counts.values()), dict(sorted(counts.items()))


def pair_batch(cfg):
    """A DPO batch as `PairCollator` lays it out: 2 pairs = 4 padded rows (chosen, then rejected) + pair indices."""
    from higgs_ds.constants import PAIR_INDEX_KEY

    return {**padded_batch(cfg, lengths=(256, 200, 240, 184)), PAIR_INDEX_KEY: torch.arange(2)}


def dpo_step_fn(model, kind):
    """The DPO loss (`preference_loss`): `dpo` / `dpo_without_plan` with the adapter-disabled reference (a second
    forward without grad), `dpo_stored` with reference log-probs looked up on the device."""
    from higgs_ds.loss.preference import PreferenceConfig, preference_loss, stored_reference
    from higgs_ds.models.training_forward import INDEX_PLAN_KEY

    config, table = PreferenceConfig(beta=0.1), torch.linspace(-120.0, -80.0, 4, dtype=torch.float64).view(2, 2)

    def step(batch):
        if kind == "dpo_without_plan":
            batch = {k: v for k, v in batch.items() if k != INDEX_PLAN_KEY}
        reference = stored_reference(table, batch) if kind == "dpo_stored" else None
        return preference_loss(model, batch, config, reference).loss
    return step


def step_fn(model, kind):
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.training_forward import INDEX_PLAN_KEY
    from tests.loss.reference_loss import plain_loss

    if kind.startswith("dpo"):
        return dpo_step_fn(model, kind)

    def step(batch):
        if kind != "higgs_ds":
            batch = {k: v for k, v in batch.items() if k != INDEX_PLAN_KEY}
        if kind == "naive":
            return plain_loss(model(**batch), batch).loss
        return compute_loss(model, batch, LossConfig()).loss
    return step


def measure(layers, kind, ckpt=False):
    """Sync ops of one forward + backward (after one unprofiled warm-up step)."""
    from higgs_ds.data.index_plan import add_plan

    cfg = higgs_config(num_hidden_layers=layers, **SMALL)
    model = build(cfg, ours=kind != "naive", ckpt=ckpt, dev="cpu", dtype=torch.float32)
    batch = add_plan(pair_batch(cfg) if kind.startswith("dpo") else padded_batch(cfg), cfg)
    step = step_fn(model, kind)
    step(batch).backward()
    model.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(batch).backward()
    if not any("Backward" in e.name for e in prof.events()):
        raise RuntimeError("the profile holds no autograd backward ops: the count would miss the backward")
    return count_syncs(prof)


FORWARD, BACKWARD = "higgs_ds.loss_forward", "higgs_ds.engine_backward"


def deeper_tiny_model(layers, out_dir):
    """(tiny assets, a copy of the tiny default model dir with `layers` dual-FFN decoder layers, random weights)."""
    import shutil

    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    from higgs_ds.assets import ensure_tiny_assets

    tiny = ensure_tiny_assets()
    shutil.copytree(tiny.model_path, out_dir)
    cfg = HiggsAudioConfig.from_pretrained(out_dir)
    cfg.text_config.num_hidden_layers = layers
    cfg.audio_dual_ffn_layers = list(range(layers))
    torch.manual_seed(0)
    HiggsAudioModel(cfg).save_pretrained(out_dir, safe_serialization=True)
    return tiny, out_dir


class _LabelledEngine:
    """The DeepSpeed engine, its `backward` inside a profiler range."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def backward(self, loss):
        with torch.profiler.record_function(BACKWARD):
            return self._engine.backward(loss)


def _labelled_loss(loss_fn, keep_plan):
    from higgs_ds.models.training_forward import INDEX_PLAN_KEY

    def run(batch, denominators=None):
        batch = batch if keep_plan else {k: v for k, v in batch.items() if k != INDEX_PLAN_KEY}
        with torch.profiler.record_function(FORWARD):
            return loss_fn(batch, denominators)
    return run


def tiny_pairs(out_path):
    """A pair file from the tiny default train set: each sample's rejected audio is the next sample's target."""
    from higgs_ds.assets import ensure_tiny_data

    train, _ = ensure_tiny_data()
    root = os.path.dirname(train)
    with open(train) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        for m in row["messages"]:
            if isinstance(m["content"], dict):
                m["content"]["audio_url"] = os.path.join(root, m["content"]["audio_url"])
    with open(out_path, "w") as f:
        for i, row in enumerate(rows):
            rejected = rows[(i + 1) % len(rows)]["messages"][-1]["content"]
            f.write(json.dumps({**row, "rejected": dict(rejected)}) + "\n")
    return out_path


def measure_train_step(layers, ckpt, stage="sft"):
    """{"step", "whole_step", "without_plan": (total, ops), "checkpointed": layers} of train.py's own step (its
    loader, engine and loss) on the tiny model `layers` deep with `--activation_checkpointing ckpt`, after one
    warm-up step; "checkpointed": the layers that recompute in the backward (marked, and in training mode).
    `stage` dpo: `--stage dpo` on pairs of the tiny train set (LoRA: the adapter-disabled reference)."""
    from higgs_ds.args import parse_args
    from higgs_ds.models.training_forward import is_checkpointed
    from higgs_ds.models.unwrap import base_higgs_model
    from higgs_ds.recipes import dpo, loop, sft

    with tempfile.TemporaryDirectory() as tmp:
        tiny, model_dir = deeper_tiny_model(layers, os.path.join(tmp, "model"))
        extra = ["--stage", "dpo", "--train_data", tiny_pairs(os.path.join(tmp, "pairs.jsonl"))] \
            if stage == "dpo" else []
        args = parse_args(["--model_path", model_dir, "--tokenizer_path", tiny.model_path,
                           "--audio_tokenizer_path", tiny.audio_tokenizer_path, "--batch_size", "2",
                           "--activation_checkpointing", ckpt, "--output_dir", os.path.join(tmp, "out")] + extra)
        c = (dpo if stage == "dpo" else sft).build(args)
        c.engine.train()  # as train.fit does before its steps
        marked = [layer.training and is_checkpointed(layer) for layer in base_higgs_model(c.engine).layers]
        windows = (w for _ in range(100) for w in loop.accumulation_windows(c.loader, c.accum))
        engine = _LabelledEngine(c.engine)

        def step(i, keep_plan):
            objective = dataclasses.replace(c.objective, loss_fn=_labelled_loss(c.objective.loss_fn, keep_plan))
            loop.train_step(dataclasses.replace(c, engine=engine, objective=objective), next(windows), i)
        step(1, True)
        out = {}
        for i, (name, keep_plan) in enumerate((("step", True), ("without_plan", False)), 2):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                step(i, keep_plan)
            if not any(e.name == BACKWARD for e in prof.events()):
                raise RuntimeError("the profile holds no engine.backward: the count would miss the backward")
            out[name] = count_syncs(prof, within=(FORWARD, BACKWARD))
            if keep_plan:
                out["whole_step"] = count_syncs(prof)
        return {**out, "checkpointed": sum(marked)}


def train_step_cell(layers, ckpt, stage="sft"):
    """`measure_train_step` in a fresh process (nothing installed or set up there before train.py's own build)."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--train_step", str(layers),
                           "--activation_checkpointing", ckpt, "--stage", stage], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"train-step cell ({layers} layers, {ckpt}, {stage}) failed:\n{proc.stdout[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cells(layers, kinds):
    """{name: ([total per depth], {depth: ops})} of the in-process cells (this process: like-for-like models)."""
    out = {}
    for name, kind, ckpt in kinds:
        results = [measure(n, kind, ckpt) for n in layers]
        out[name] = ([t for t, _ in results], {str(n): ops for n, (_, ops) in zip(layers, results)})
        print(f"{name:>22}: " + ", ".join(f"{n} layers {t} syncs {ops}" for n, (t, ops) in zip(layers, results)),
              flush=True)
    return out


def _train_cells(layers, stage="sft"):
    """The train.py cells, each in a fresh process, checkpointing off and on (dpo: `--stage dpo`, "dpo_" names)."""
    out = {}
    for ckpt, suffix in (("off", ""), ("all", "_ckpt")):
        results = [train_step_cell(n, ckpt, stage) for n in layers]
        for part in ("step", "whole_step", "without_plan"):
            name = ("dpo_" if stage == "dpo" else "") + "train_" + part + suffix
            out[name] = ([r[part][0] for r in results], {str(n): r[part][1] for n, r in zip(layers, results)})
            print(f"{name:>22}: " + ", ".join(f"{n} layers {r[part][0]} syncs {r[part][1]}"
                                              for n, r in zip(layers, results)), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[2, 8], help="decoder depths to measure")
    p.add_argument("--json", action="store_true", help="print the summary as the last stdout line")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "syncs_cpu.json"),
                   help="where the results (with per-op counts) are written")
    p.add_argument("--train_step", type=int, help="only measure train.py's step at this depth, in this process")
    p.add_argument("--activation_checkpointing", default="all", choices=("off", "all"), help="with --train_step")
    p.add_argument("--stage", default="sft", choices=("sft", "dpo"), help="with --train_step")
    p.add_argument("--stages", nargs="+", default=["sft", "dpo"], choices=("sft", "dpo"),
                   help="which cells to run; the others keep their numbers in --out")
    args = p.parse_args(argv)
    if args.train_step:
        result = measure_train_step(args.train_step, args.activation_checkpointing, args.stage)
        print(json.dumps(result), flush=True)
        return 0
    torch.manual_seed(0)
    kinds = {"sft": (("higgs_ds", "higgs_ds", False), ("higgs_ds_ckpt", "higgs_ds", True), ("naive", "naive", False),
                     ("higgs_ds_without_plan", "higgs_ds_without_plan", False)),
             "dpo": (("dpo", "dpo", False), ("dpo_ckpt", "dpo", True), ("dpo_stored", "dpo_stored", False),
                     ("dpo_without_plan", "dpo_without_plan", False))}
    cells = {}
    for stage in args.stages:
        cells.update(_cells(args.layers, kinds[stage]))
        cells.update(_train_cells(args.layers, stage))
    _write(args.out, args.layers, cells)
    summary = _read(args.out)
    if args.json:
        print(json.dumps({k: summary.get(k) for k in ("layers", "higgs_ds", "higgs_ds_ckpt", "naive", "train_step_ckpt",
                                                      "dpo", "dpo_stored", "dpo_train_step_ckpt")}))
    return 0


def _read(path):
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write(path, layers, cells):
    """Merge `cells` into the results at `path` (cells not run keep their numbers when the depths are the same)."""
    old = _read(path)
    if old.get("layers") != layers:
        old = {}
    per_op = {**old.get("per_op", {}), **{k: ops for k, (_, ops) in cells.items()}}
    totals = {k: v for k, v in old.items() if k in per_op}
    totals.update({k: t for k, (t, _) in cells.items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"layers": layers, **totals, "per_op": per_op, "device": "cpu", "torch": torch.__version__,
                   "what": "host-synchronising ops in one training forward + backward (bench/syncs.py)"}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

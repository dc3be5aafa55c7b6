"""`higgs-ds export --average last:K|best:K`: the mean of the adapters of K saved checkpoints, as CosyVoice's
`average_model.py` averages its last / best-eval-loss checkpoints.

`last:K` takes the K newest complete checkpoints of a run; `best:K` the K with the lowest teacher-forced eval
loss (`eval/loss/total` logged at their step in the run's metrics.jsonl: use --eval_every equal to --save_every).
Every tensor of the adapters (LoRA matrices and modules_to_save) is averaged in float64 and written back in its
dtype; the adapter config is the newest chosen checkpoint's.
"""
import json
import os
import shutil

from ..engine.checkpoint import complete_tags
from ..errors import ConfigError, InputNotFound

WEIGHTS = "adapter_model.safetensors"
LOSS_KEY = "eval/loss/total"


def parse_spec(spec):
    """("last" | "best", K) of `last:K` / `best:K`."""
    mode, _, k = spec.partition(":")
    if mode not in ("last", "best") or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"--average {spec}: expected last:K or best:K with K >= 1")
    return mode, int(k)


def run_dirs(path):
    """(run output dir, checkpoints dir) of a run output dir or of its checkpoints/ dir."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return path, os.path.join(path, "checkpoints")
    return os.path.dirname(path), path


def eval_losses(run_dir):
    """{step: eval/loss/total} from the run's metrics.jsonl (a resumed run's later line wins)."""
    out, path = {}, os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get(LOSS_KEY) is not None:
                    out[rec["step"]] = rec[LOSS_KEY]
    return out


def chosen_tags(path, spec):
    """[(step, tag dir)] of the checkpoints `spec` selects, oldest first."""
    mode, k = parse_spec(spec)
    run_dir, ckpt_dir = run_dirs(path)
    tags = [(s, t) for s, t in complete_tags(ckpt_dir) if os.path.isfile(os.path.join(t, "adapter", WEIGHTS))]
    if mode == "best":
        losses = eval_losses(run_dir)
        tags = sorted(sorted((t for t in tags if t[0] in losses), key=lambda t: losses[t[0]])[:k])
        where = f"with {LOSS_KEY} logged at their step in {run_dir}/metrics.jsonl (--eval_every = --save_every)"
    else:
        tags, where = tags[-k:], ""
    if len(tags) < k:
        raise InputNotFound(f"--average {spec}: {len(tags)} complete checkpoint(s) holding an adapter copy in "
                            f"{ckpt_dir} {where}, {k} needed (ZeRO-3 and --finetune full checkpoints hold none)")
    return tags


def average_adapters(tag_dirs, out_dir):
    """Write the mean adapter of the tags' `adapter/` dirs into `out_dir`; returns `out_dir`."""
    from safetensors.torch import load_file, save_file

    total, dtypes, keys = None, {}, None
    for tag in tag_dirs:
        weights = load_file(os.path.join(tag, "adapter", WEIGHTS))
        if keys is not None and set(weights) != keys:
            raise ConfigError(f"--average: {tag}/adapter holds other tensors than the other checkpoints")
        keys, dtypes = set(weights), {k: v.dtype for k, v in weights.items()}
        total = {k: v.double() + (total[k] if total else 0) for k, v in weights.items()}
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: (v / len(tag_dirs)).to(dtypes[k]).contiguous() for k, v in total.items()},
              os.path.join(out_dir, WEIGHTS))
    newest = os.path.join(tag_dirs[-1], "adapter")
    for name in os.listdir(newest):
        if name != WEIGHTS and os.path.isfile(os.path.join(newest, name)):
            shutil.copy2(os.path.join(newest, name), out_dir)
    return out_dir


def averaged_run(path, spec, work_dir):
    """A run-like dir in `work_dir` holding the averaged `adapter/` (and the run's metrics.json, for the model card,
    plus `averaged.json` naming the steps); returns it."""
    tags = chosen_tags(path, spec)
    run_dir, _ = run_dirs(path)
    average_adapters([t for _, t in tags], os.path.join(work_dir, "adapter"))
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        shutil.copy2(os.path.join(run_dir, "metrics.json"), work_dir)
    with open(os.path.join(work_dir, "averaged.json"), "w") as f:
        json.dump({"average": spec, "steps": [s for s, _ in tags], "checkpoints": [t for _, t in tags]}, f, indent=1)
    return work_dir

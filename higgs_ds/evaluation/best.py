"""`--keep_best sim|wer|dnsmos|loss|sim_retain`: keep the artefact of the best evaluation so far in `<output_dir>/best/`
(`adapter/`, or `model/` with --finetune full; beside the latest checkpoints), with `best.json` naming the metric,
its value and the step."""
import json
import os
import shutil

# flag value -> (key in the eval metrics, higher is better); "wer" is each language's error rate (CER for Chinese, ...)
METRIC_KEYS = {"sim": ("sim", True), "dnsmos": ("dnsmos_ovrl", True), "wer": ("error_rate", False),
               "loss": ("loss/total", False),
               "sim_retain": ("sim_retain", True)}  # sim - retain_drop (evaluation/retention.py)


class BestKeeper:
    def __init__(self, metric, output_dir, save_fn, rank=0, artefact="adapter"):
        """`save_fn(dir)` writes the artefact into `best/<artefact>/`; it is called on every rank (under ZeRO-3 it
        gathers the partitions: `models/finetune.save_to`), and every rank must observe the same metrics (they are
        all-reduced / gathered). Rank 0 owns the directory."""
        self.key, self.higher = METRIC_KEYS[metric]
        self.metric, self.dir, self.save_fn, self.rank = metric, os.path.join(output_dir, "best"), save_fn, rank
        self.artefact = artefact
        self.best = self._load()

    def _load(self):
        try:
            with open(os.path.join(self.dir, "best.json")) as f:
                return json.load(f)  # resuming: the best so far survives
        except (OSError, ValueError):
            return None

    def better(self, value):
        if self.best is None:
            return True
        return value > self.best["value"] if self.higher else value < self.best["value"]

    def observe(self, step, metrics):
        """Save when `metrics[key]` beats the best so far; returns True when it did. Missing values are ignored."""
        from ..durable import fsync_tree, write_atomic

        value = (metrics or {}).get(self.key)
        if value is None or not self.better(value):
            return False
        self.best = {"metric": self.metric, "key": self.key, "value": float(value), "step": int(step)}
        tmp = self.dir + ".tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        self.save_fn(os.path.join(tmp, self.artefact))  # every rank (a collective under ZeRO-3)
        if self.rank == 0:
            write_atomic(os.path.join(tmp, "best.json"), json.dumps(self.best, indent=1))
            fsync_tree(tmp)
            shutil.rmtree(self.dir, ignore_errors=True)
            os.replace(tmp, self.dir)
        return True


def observe(keeper, step, metrics):
    """`keeper.observe` when --keep_best is set (keeper is None otherwise)."""
    return keeper.observe(step, metrics) if keeper is not None else False

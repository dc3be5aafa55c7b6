"""`--keep_best sim|wer|dnsmos|loss`: keep the adapter of the best evaluation so far in `<output_dir>/best/`
(beside the latest checkpoints), with `best.json` naming the metric, its value and the step."""
import json
import os
import shutil

# flag value -> (key in the eval metrics, higher is better)
METRIC_KEYS = {"sim": ("sim", True), "dnsmos": ("dnsmos_ovrl", True), "wer": ("wer", False), "loss": ("loss/total", False)}


class BestKeeper:
    def __init__(self, metric, output_dir, save_fn, rank=0):
        """`save_fn(dir)` writes the adapter (e.g. `peft_model.save_pretrained`); only rank 0 writes."""
        self.key, self.higher = METRIC_KEYS[metric]
        self.metric, self.dir, self.save_fn, self.rank = metric, os.path.join(output_dir, "best"), save_fn, rank
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
        if self.rank == 0:
            tmp = self.dir + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.save_fn(os.path.join(tmp, "adapter"))
            write_atomic(os.path.join(tmp, "best.json"), json.dumps(self.best, indent=1))
            fsync_tree(tmp)
            shutil.rmtree(self.dir, ignore_errors=True)
            os.replace(tmp, self.dir)
        return True


def observe(keeper, step, metrics):
    """`keeper.observe` when --keep_best is set (keeper is None otherwise)."""
    return keeper.observe(step, metrics) if keeper is not None else False

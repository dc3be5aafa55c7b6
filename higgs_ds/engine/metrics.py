"""Per-step training metrics: TensorBoard scalars and a tqdm bar on rank 0.

Each optimizer step's losses and accuracies are the mean over the step's micro-batches and over all ranks
(one all-reduce per step); throughput counts every rank's work:
- tokens = non-pad text tokens + audio-in columns + audio-out columns (the positions the decoder runs on);
- audio-seconds = audio-out columns / 25 (the tokenizer's frame rate; delay-pattern columns included);
- data-wait fraction = time spent waiting for the next accumulation window / step wall time;
- MFU = tokens/s/GPU x FLOPs per token / peak FLOP/s. FLOPs per token = 2N (forward, all N parameters) +
  2N (backward activation gradients, which flow through the frozen base too) + 2N_trainable (weight gradients of
  the LoRA parameters only) + 2N x the fraction of decoder layers under activation checkpointing (their forward
  runs twice; approximating every layer as equally heavy and the non-layer parameters as small); attention's
  quadratic term is left out. Peak: dense bf16 of the device (table below); "n/a" on CPU or unknown devices.
"""
import dataclasses
import logging
import math
import os
import resource
import time
from typing import Optional

import torch

from ..config import option
from ..constants import FRAMES_PER_SECOND
from .distributed import all_reduce_sum

log = logging.getLogger(__name__)
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


@dataclasses.dataclass
class MetricsConfig:
    """Log lines, TensorBoard and the progress bar."""
    log_every: int = option(1, "log a line every N optimizer steps", minimum=1)
    tensorboard_dir: Optional[str] = option(None, "TensorBoard event dir (rank 0); default output_dir/tensorboard; "
                                                  "'none': off", type=str)
    no_progress: bool = option(False, "no tqdm progress bar")
    wandb_project: Optional[str] = option(None, "also log every metric and preview to Weights & Biases under this "
                                                "project (rank 0; needs `pip install wandb`, not part of the pinned "
                                                "stack). Scalars always go to output_dir/metrics.jsonl too", type=str)


def flops_per_token(model, recompute_fraction=0.0):
    """Training FLOPs per token (formula in the module docstring)."""
    n = sum(full_numel(p) for p in model.parameters())
    n_trainable = sum(full_numel(p) for p in model.parameters() if p.requires_grad)
    return flops_from_counts(n, n_trainable, recompute_fraction)


def full_numel(p):
    """Elements of a parameter as the model defines it: ZeRO-3 leaves each rank an empty placeholder (`numel()` 0)
    and keeps the true count in `ds_numel`."""
    return getattr(p, "ds_numel", p.numel())


def flops_from_counts(n, n_trainable, recompute_fraction=0.0):
    """Training FLOPs per token from parameter counts (all, trainable); see the module docstring."""
    return (4 + 2 * recompute_fraction) * n + 2 * n_trainable


def peak_flops(bf16):
    """Dense bf16 peak FLOP/s of this GPU, or None (CPU, fp32, device not in the table)."""
    if not (bf16 and torch.cuda.is_available()):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def peak_memory_gib():
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def batch_counts(batch):
    """(tokens, samples, audio-out frames) of a collated batch."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    text = int(mask.sum()) if mask is not None else ids.numel()
    audio_out = batch["audio_out_ids"].shape[-1] if "audio_out_ids" in batch else 0
    audio_in = batch["audio_in_ids"].shape[-1] if "audio_in_ids" in batch else 0
    return text + audio_in + audio_out, ids.shape[0], audio_out


class StepMeter:
    """Collects a step's micro-batch metrics (`add`), then averages, logs and returns them (`finish`)."""

    def __init__(self, rank, world, total_steps, start_step=0, tensorboard_dir=None, fpt=None, peak=None,
                 progress=True, sinks=None):
        """`sinks`: where scalars go (engine/sinks.py); default: TensorBoard at `tensorboard_dir` (rank 0)."""
        from .sinks import build_sinks

        self.rank, self.world, self.fpt, self.peak = rank, world, fpt, peak
        self.sinks = sinks if sinks is not None else build_sinks(rank, tensorboard_dir)
        self.bar = None
        if rank == 0 and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)
        self._reset()

    def _reset(self):
        self.keys, self.sums, self.n, self.counts, self.wait = None, None, 0, [0, 0, 0], 0.0
        self.t0 = time.perf_counter()

    def windows(self, iterable):
        """Yield from `iterable`, timing how long each `next` waits (the data-wait of the coming step)."""
        it = iter(iterable)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t
            yield item

    def add(self, metrics, batch):
        """Accumulate on the metrics' device: no host sync per micro-batch (one `.tolist()` per step in `finish`)."""
        keys = sorted(k for k in metrics if k.startswith(("loss/", "acc/", "pref/")))
        if keys:
            vals = torch.stack([torch.as_tensor(metrics[k]).detach().to(torch.float64).reshape(()) for k in keys])
            if self.keys is None:
                self.keys, self.sums = keys, vals
            elif keys != self.keys:
                raise ValueError(f"metric keys changed within a step: {self.keys} -> {keys}")
            else:
                self.sums = self.sums + vals
        self.n += 1
        self.counts = [a + b for a, b in zip(self.counts, batch_counts(batch))]

    def finish(self, step, lr, grad_norm=None, extra=None):
        """All-reduce, write the step's scalars (rank 0) and return its record (same on every rank); `extra`: more
        scalars, already the same on every rank (e.g. train/skipped_steps)."""
        keys = self.keys or []
        sums = self.sums.tolist() if keys else []
        vec = torch.tensor([v / self.n for v in sums] + self.counts, dtype=torch.float64)
        vec = all_reduce_sum(vec)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        means = (vec[:len(keys)] / self.world).tolist()
        tokens, samples, frames = vec[len(keys):].tolist()
        record = {"step": step, **dict(zip(keys, means)), "lr": lr, "perf/tokens_per_s": tokens / dt,
                  "perf/samples_per_s": samples / dt, "perf/audio_seconds_per_s": frames / FRAMES_PER_SECOND / dt,
                  "perf/data_wait_fraction": min(self.wait / dt, 1.0), "perf/peak_memory_gib": peak_memory_gib()}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        record.update(extra or {})
        if self.fpt and self.peak:
            record["perf/mfu"] = tokens / self.world / dt * self.fpt / self.peak
        self.write(record, step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{record.get('loss/total', float('nan')):.4f}",
                                 tok_s=f"{record['perf/tokens_per_s']:.0f}", refresh=False)
        self._reset()
        return record

    def write(self, scalars, step, prefix=""):
        """Scalars (numbers of `scalars`, keys prefixed) to every sink."""
        self.sinks.scalars(scalars, step, prefix)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.sinks.close()


def default_tensorboard_dir(output_dir, flag):
    """--tensorboard_dir: unset = output_dir/tensorboard, "none" = off."""
    if flag is None:
        return os.path.join(output_dir, "tensorboard")
    return None if flag.lower() == "none" else flag


def json_safe(obj):
    """`obj` with every non-finite float (a skipped step's NaN loss or inf grad norm) as None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj

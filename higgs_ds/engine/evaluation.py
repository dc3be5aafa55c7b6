"""Evaluation during training: teacher-forced loss on the validation set, and audio previews (config + loop)."""
import dataclasses
import logging

import torch

from ..config import option
from .distributed import all_reduce_sum

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalConfig:
    eval_every: int = option(0, "evaluate on the validation set every N optimizer steps (TensorBoard eval/...; 0: "
                                "only at the end)", minimum=0)
    sample_every: int = option(0, "every N optimizer steps rank 0 clones --num_preview_prompts validation prompts "
                                  "with the serve engine and writes audio + spectrograms to TensorBoard (0: off)",
                               minimum=0)
    num_preview_prompts: int = option(2, "validation prompts per audio preview", minimum=1)
    preview_max_new_tokens: int = option(512, "generation budget of each preview", minimum=1)
    batch_size: int = 2
    seed: int = 42
    num_workers: int = 0

    def due(self, step):
        return self.eval_every > 0 and step % self.eval_every == 0


@torch.no_grad()
def evaluate(engine, dataset, model_config, config, rank, world, loss_fn):
    """Mean of per-batch losses and per-codebook accuracies over the validation set, averaged over ranks."""
    from ..data.loaders import build_loader, to_device

    engine.eval()
    loader = build_loader(dataset, model_config, config.batch_size, rank, world, config.seed, shuffle=False,
                          num_workers=config.num_workers, plan=True)  # sync-free forward (data/plan.py)
    sums = {}
    for batch in loader:
        for k, v in loss_fn(to_device(batch, engine.device)).metrics.items():
            if k.startswith(("loss/", "acc/")):
                sums[k] = sums.get(k, 0.0) + float(v)
    keys = sorted(sums)
    vec = torch.tensor([sums[k] for k in keys] + [float(len(loader))], dtype=torch.float64)
    vec = all_reduce_sum(vec)
    engine.train()
    return {k: v / max(vec[-1].item(), 1.0) for k, v in zip(keys, vec[:-1].tolist())}


def report_eval(val, step, meter):
    meter.write(val, step, "eval/")
    log.info("validation at step %d: loss %.4f | text %.4f | audio %.4f", step, val["loss/total"], val["loss/text"],
             val["loss/audio"])


def build_preview(rank, config, engine, paths, val_set, writer):
    """The TensorBoard audio preview on rank 0 (None when off, without validation data or TensorBoard)."""
    if rank != 0 or config.sample_every <= 0 or val_set is None or writer is None:
        return None
    from ..inference.preview import AudioPreview
    from ..models.unwrap import base_higgs_model

    return AudioPreview(base_higgs_model(engine), paths, val_set.samples, config.sample_every, writer,
                        config.num_preview_prompts, config.preview_max_new_tokens)

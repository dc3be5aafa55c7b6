"""`--ema_decay D`: an exponential moving average of the trainable weights, in fp32, updated after every optimizer
step, saved in every checkpoint (`ema.pt`) and restored on resume, so a killed and resumed run has the same average
as an uninterrupted one. When set, evaluation and the final artefact use the averaged weights (`applied`).

The first update copies the weights; then `ema = D * ema + (1 - D) * w`. Under ZeRO-1/2 every rank holds the
whole trainable weights and updates the same average; rank 0 saves it. ZeRO-3 partitions the weights: refused.
"""
import contextlib
import dataclasses
import logging
import os

import torch

from ..config import option
from ..errors import ConfigError

log = logging.getLogger(__name__)
FILE = "ema.pt"


@dataclasses.dataclass
class EmaConfig:
    """Smoother weights: an exponential moving average of the trainable weights."""
    ema_decay: float = option(0.0, "keep an exponential moving average of the trainable weights (fp32, in every "
                                   "checkpoint) with this decay per optimizer step, e.g. 0.999; evaluation, "
                                   "--keep_best and the final adapter use it (0: off)", minimum=0.0)

    def build(self, engine):
        """The `WeightAverage` of `engine.module`'s trainable weights, or None when off."""
        if self.ema_decay == 0:
            return None
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"--ema_decay {self.ema_decay}: must be between 0 and 1 (0: off)")
        if engine.zero_optimization_stage() == 3:
            raise ConfigError("--ema_decay needs whole weights on every rank: use ZeRO stage 0, 1 or 2, not 3")
        return WeightAverage(engine.module, self.ema_decay)


class WeightAverage:
    def __init__(self, module, decay):
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.decay, self.updates, self.shadow = decay, 0, None

    @torch.no_grad()
    def update(self):
        """Fold the current weights in (after an optimizer step)."""
        if self.shadow is None:
            self.shadow = {n: p.detach().float().clone() for n, p in self.params}
        else:
            for n, p in self.params:
                self.shadow[n].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)
        self.updates += 1

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def save_state(self, tag_dir, rank):
        """Into a checkpoint being written (rank 0; every rank holds the same average)."""
        if rank == 0:
            torch.save(self.state_dict(), os.path.join(tag_dir, FILE))

    def load_state(self, tag_dir):
        """From a checkpoint; one written without --ema_decay starts the average at the next step."""
        path = os.path.join(tag_dir, FILE)
        if not os.path.isfile(path):
            log.warning("%s has no %s: the weight average starts from the next step's weights", tag_dir, FILE)
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["decay"] != self.decay:
            log.warning("--ema_decay %g, the checkpoint's average used %g: continuing it with %g", self.decay,
                        state["decay"], self.decay)
        names = {n for n, _ in self.params}
        if state["shadow"] is not None and set(state["shadow"]) != names:
            raise ConfigError(f"{path}: its weights are not this model's trainable weights (another --finetune or "
                              "LoRA setting?)")
        self.updates, self.shadow = state["updates"], state["shadow"]

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in place of the trained ones inside the block (restored exactly after it)."""
        if self.shadow is None:
            yield
            return
        with torch.no_grad():
            kept = {n: p.detach().clone() for n, p in self.params}
            for n, p in self.params:
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params:
                    p.copy_(kept[n])


def applied(average):
    """`average.applied()`, or a no-op without --ema_decay (`average` is None)."""
    return average.applied() if average is not None else contextlib.nullcontext()

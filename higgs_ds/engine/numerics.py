"""Non-finite loss / gradient guard: skip the optimizer step, count it, abort after too many in a row.

Built on DeepSpeed ZeRO (`zero/stage_1_and_2.py`, `zero/stage3.py`, 0.19): at the accumulation boundary the
optimizer computes the global gradient norm (all-reduced over the data-parallel ranks) and, when it is inf/NaN,
marks the step an overflow: it zeroes the gradients and returns without touching parameters or optimizer state,
and the engine does not advance the LR scheduler (`engine.was_step_applied()` is False). Stages 1/2 need
`zero_optimization.compute_grad_norm` (default true) in fp32, and `bf16.check_grad_overflow` (default true) in
bf16; stage 3 checks the norm unconditionally. `check_config` refuses configs that switch the check off and
warns on ZeRO stage 0, where the client optimizer steps on whatever gradients it gets.
A NaN/inf loss makes every gradient non-finite, so one mechanism covers both; because the norm is reduced
across ranks, every rank takes the same decision (no rank steps while another skips, no hang).
"""
import logging
import os

import torch

from ..faults import fault
from .checkpoint import complete_tags

log = logging.getLogger(__name__)


class NonFiniteAbort(RuntimeError):
    """Too many consecutive optimizer steps had non-finite gradients."""


def check_config(cfg, path):
    """Problems (list of str) that would let a non-finite gradient reach the weights under this DeepSpeed config."""
    zero = cfg.get("zero_optimization", {})
    problems = []
    if zero.get("stage", 0) == 0:
        log.warning("%s: ZeRO stage 0 has no overflow check: a NaN/inf gradient would reach the weights (the "
                    "non-finite step guard needs zero_optimization.stage 1, 2 or 3)", path)
    if zero.get("compute_grad_norm", True) is False:
        problems.append(f"{path}: zero_optimization.compute_grad_norm = false disables the non-finite gradient check")
    if cfg.get("bf16", {}).get("enabled") and cfg["bf16"].get("check_grad_overflow", True) is False:
        problems.append(f"{path}: bf16.check_grad_overflow = false lets NaN/inf gradients into the weights")
    return problems


class _InfGrad(torch.autograd.Function):
    """Identity in the forward, +inf gradient in the backward (fault `inf_grad`: finite loss, broken grads)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def inject(loss, step, rank):
    """Fault points `nan_loss` / `inf_grad` (HIGGS_DS_FAULT, engine/faults.py) for the tests; else `loss`."""
    if fault("nan_loss", step, rank):
        return loss * float("nan")
    if fault("inf_grad", step, rank):
        return _InfGrad.apply(loss)
    return loss


class StepGuard:
    """After each optimizer step: was it applied? Counts skips; raises `NonFiniteAbort` after `max_consecutive`."""

    def __init__(self, max_consecutive, output_dir, history=()):
        self.max_consecutive, self.output_dir = max_consecutive, output_dir
        self.skipped = sum(h.get("train/step_skipped", 0) for h in history)  # resumed runs keep counting
        self.consecutive = 0

    def update(self, engine, step):
        """Record whether `step` was applied; returns the metrics to log with it."""
        if engine.was_step_applied():
            self.consecutive = 0
            return {"train/skipped_steps": self.skipped, "train/step_skipped": 0}
        self.skipped += 1
        self.consecutive += 1
        log.warning("step %d: non-finite loss or gradient (grad norm %s): optimizer step skipped, weights and "
                    "optimizer state unchanged (%d skipped so far, %d in a row)", step,
                    engine.get_global_grad_norm(), self.skipped, self.consecutive)
        if 0 < self.max_consecutive <= self.consecutive:
            tags = complete_tags(os.path.join(self.output_dir, "checkpoints"))
            last = (f"the last good checkpoint is {tags[-1][1]} (step {tags[-1][0]}): lower the learning rate "
                    f"and rerun with --resume auto" if tags else
                    "there is no checkpoint (use --save_every N); lower the learning rate and restart")
            raise NonFiniteAbort(f"{self.consecutive} consecutive optimizer steps (up to step {step}) had a "
                                 f"non-finite loss or gradient (--max_consecutive_skips {self.max_consecutive}); "
                                 f"stopping: {last}")
        return {"train/skipped_steps": self.skipped, "train/step_skipped": 1}

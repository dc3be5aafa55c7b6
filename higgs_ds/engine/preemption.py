"""Graceful stop on SIGTERM / SIGINT (SLURM preemption or time limit, spot reclaim, Ctrl-C).

The handler only sets a flag. After each optimizer step every rank all-reduces its flag (one scalar), so all
ranks see a signal that reached any one of them at the same step, finish that step, save a checkpoint
together (even with --save_every 0) and exit with `EXIT_PREEMPTED` (75, EX_TEMPFAIL from sysexits.h:
"temporary failure, try again"): a wrapper script can requeue on 75 (`scontrol requeue $SLURM_JOB_ID`) and treat
0 as finished. Under the deepspeed launcher, the node launcher (deepspeed/launcher/launch.py) forwards
SIGINT/SIGTERM to its ranks, waits up to 30 s for them, then SIGKILLs them and exits 1 itself; the `deepspeed`
runner on one node forwards nothing (signal the process group, as SLURM and Ctrl-C do, or launch.py).
"""
import logging
import signal

import torch

from ..errors import EXIT_PREEMPTED
from .distributed import all_reduce_sum

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
    """Installs the handlers; `requested()` (a collective: call it on every rank at the same point) says stop."""

    def __init__(self):
        self.received = None
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, frame):
        if self.received is None:
            log.warning("received %s: finishing the current optimizer step, then saving a checkpoint",
                        signal.Signals(signum).name)
        self.received = signum

    def requested(self):
        flag = torch.tensor([0.0 if self.received is None else 1.0], dtype=torch.float64)
        return bool(all_reduce_sum(flag)[0] > 0)

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @staticmethod
    def message(step, ckpt_dir):
        return (f"preempted: stopped after optimizer step {step} and saved its checkpoint under {ckpt_dir}; rerun the "
                f"same command with --resume auto to continue (exit code {EXIT_PREEMPTED})")

"""Units of the reliability features (the end-to-end proofs are in test_reliability.py): fault points for NaN/inf, the step guard's
counting and abort message, the preemption flag."""
import json
import os
import signal

import pytest
import torch

from higgs_ds.engine.numerics import NonFiniteAbort, StepGuard, inject
from higgs_ds.engine.preemption import Preemption
from higgs_ds.faults import ENV


def test_nan_loss_and_inf_grad_faults(monkeypatch):
    monkeypatch.setenv(ENV, "nan_loss@2#1,inf_grad@3")
    w = torch.ones(3, requires_grad=True)
    assert inject((w * 2).sum(), 2, rank=0).isfinite()  # other rank: untouched
    assert inject((w * 2).sum(), 2, rank=1).isnan()
    loss = inject((w * 2).sum(), 3, rank=0)
    loss.backward()
    assert loss.item() == 6.0 and torch.isinf(w.grad).all()  # finite loss, non-finite gradient


class FakeEngine:
    def __init__(self):
        self.applied = True

    def was_step_applied(self):
        return self.applied

    def get_global_grad_norm(self):
        return 1.0 if self.applied else float("inf")


def test_step_guard_counts_and_aborts_naming_the_last_checkpoint(tmp_path):
    for step in (2, 4):
        os.makedirs(tmp_path / "checkpoints" / f"step{step}")
        (tmp_path / "checkpoints" / f"step{step}" / "trainer_state.json").write_text(json.dumps({"step": step}))
    os.makedirs(tmp_path / "checkpoints" / "step5")  # incomplete: never named
    engine, guard = FakeEngine(), StepGuard(3, str(tmp_path), history=[{"train/step_skipped": 1}, {}])
    assert guard.update(engine, 1) == {"train/skipped_steps": 1, "train/step_skipped": 0}
    engine.applied = False
    assert guard.update(engine, 2)["train/skipped_steps"] == 2
    assert guard.update(engine, 3)["train/step_skipped"] == 1
    engine.applied = True
    guard.update(engine, 4)  # an applied step resets the run of skips
    engine.applied = False
    guard.update(engine, 5)
    guard.update(engine, 6)
    with pytest.raises(NonFiniteAbort, match=r"3 consecutive .* \(up to step 7\).*last good checkpoint is "
                                             rf"{tmp_path}/checkpoints/step4 \(step 4\)"):
        guard.update(engine, 7)
    with pytest.raises(NonFiniteAbort, match="there is no checkpoint"):
        g = StepGuard(1, str(tmp_path / "empty"))
        g.update(engine, 1)
    assert StepGuard(0, str(tmp_path)).update(engine, 1)["train/step_skipped"] == 1  # 0: never abort


def test_preemption_flag_is_set_by_sigterm_and_sigint():
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        p = Preemption()
        try:
            assert not p.requested()
            os.kill(os.getpid(), sig)  # the process survives: the handler only sets the flag
            assert p.requested() and p.received == sig
        finally:
            p.restore()
        assert signal.getsignal(sig) is previous


def test_dead_local_ranks_finds_a_killed_sibling(tmp_path):
    """A parent (the launcher's role) starts local ranks 0 and 1; rank 1 is SIGKILLed; rank 0 names it."""
    import subprocess
    import sys

    rank0 = ("import os, signal, time; from higgs_ds.engine.distributed import dead_local_ranks; "
             "print('before', dead_local_ranks(), flush=True); os.kill(int(os.environ['PEER']), signal.SIGKILL); "
             "time.sleep(0.5); print('after', dead_local_ranks(), flush=True)")
    launcher = f"""
import os, subprocess, sys
env = dict(os.environ, LOCAL_SIZE="2", RANK="1", LOCAL_RANK="1")
peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
env.update(RANK="0", LOCAL_RANK="0", PEER=str(peer.pid))
sys.exit(subprocess.run([sys.executable, "-c", {rank0!r}], env=env).returncode)
"""
    out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["before []", "after [1]"]


def test_failure_report_only_for_collective_errors(monkeypatch, caplog):
    import logging

    import torch.distributed as dist

    from higgs_ds.engine import distributed

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(distributed, "dead_local_ranks", lambda: [1])
    log = logging.getLogger("test_report")
    with caplog.at_level(logging.ERROR):
        distributed.report_failure(ValueError("bad sample in train.jsonl:3"), log)
        assert not caplog.records  # not a distributed failure: its own message is enough
        distributed.report_failure(RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset"), log)
    assert "rank 0 stops: rank(s) [1] on this node died" in caplog.text

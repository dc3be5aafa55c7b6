"""The fault-injection hook used by the reliability tests: parsing, matching, and a real SIGKILL."""
import signal
import subprocess
import sys

import pytest

from higgs_ds.faults import ENV, fault


def test_off_without_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert not fault("nan_loss", 1)


def test_steps_ranges_and_ranks(monkeypatch):
    monkeypatch.setenv(ENV, "nan_loss@3-5#1, inf_grad@2")
    assert [s for s in range(8) if fault("nan_loss", s, rank=1)] == [3, 4, 5]
    assert not any(fault("nan_loss", s, rank=0) for s in range(8))
    assert [s for s in range(8) if fault("inf_grad", s, rank=0)] == [2]
    assert not fault("other", 3, rank=1)


def test_malformed_spec_is_an_error(monkeypatch):
    monkeypatch.setenv(ENV, "nan_loss@x")
    with pytest.raises(ValueError, match="nan_loss@x"):
        fault("nan_loss", 1)


def test_kill_faults_sigkill_the_process():
    code = "from higgs_ds.faults import fault\nfault('kill_here', 1)\nfault('kill_here', 2)\nprint('alive')"
    proc = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, ENV: "kill_here@2"},
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and "alive" not in proc.stdout

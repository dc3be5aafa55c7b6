"""Paths and a command runner shared by the tests (fixtures are in conftest.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
DEEPSPEED = os.path.join(os.path.dirname(sys.executable), "deepspeed")


def run_cmd(cmd, timeout=900, env=None, check=True):
    """Run a command from the repo root; return CompletedProcess (stdout+stderr merged), failing loudly on a
    non-zero exit unless check=False."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-6000:]}")
    return proc

"""Fault injection for the reliability tests (off unless `HIGGS_DS_FAULT` is set).

`HIGGS_DS_FAULT` is a comma-separated list of `name@steps[#rank]`: `steps` is one optimizer step `3` or a range
`2-5`; `#rank` limits the fault to one rank (default: every rank). A name starting with `kill_` SIGKILLs the
process when the code reaches that point (no cleanup, no flush: what a node failure or OOM-killer does); any
other name (e.g. `nan_loss`) makes `fault()` return True there so the caller corrupts what it names.

    HIGGS_DS_FAULT="kill_mid_checkpoint@4"       # die after the engine state, before trainer_state.json
    HIGGS_DS_FAULT="nan_loss@3-5#1"              # rank 1 sees a NaN loss at steps 3, 4 and 5

Points in data/prepare_shard.py: `kill_mid_prepare` (a shard's .arrow written, its .json not; the step is the
shard index); in inference/sampling.py: `kill_mid_sample` (after the N-th candidate a run generates is recorded;
the step is N). Points in train.py's step: `nan_loss` (loss x NaN), `inf_grad` (finite loss, +inf gradient; both in
engine/numerics.py), `no_audio_labels` (the batch's audio labels all -100: a rank with no trainable audio),
`kill_mid_step` (after the backward, before the optimizer step). In engine/checkpoint.py's save:
`kill_mid_checkpoint` (engine state in `step<N>.tmp/`, nothing else), `kill_before_latest` (`step<N>/` renamed
into place, `latest` not moved yet).
"""
import os
import signal

ENV = "HIGGS_DS_FAULT"


def _parse(spec):
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("@")
        steps, _, rank = rest.partition("#")
        lo, _, hi = steps.partition("-")
        if not name or not lo.isdigit() or (hi and not hi.isdigit()) or (rank and not rank.isdigit()):
            raise ValueError(f"{ENV}: cannot parse {entry!r} (expected name@step[-step][#rank])")
        yield name, int(lo), int(hi or lo), int(rank) if rank else None


def fault(name, step, rank=0):
    """True when `name` is injected at optimizer `step` on `rank`; a `kill_*` fault never returns."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    for n, lo, hi, r in _parse(spec):
        if n == name and lo <= step <= hi and (r is None or r == rank):
            if name.startswith("kill_"):
                os.kill(os.getpid(), signal.SIGKILL)
            return True
    return False

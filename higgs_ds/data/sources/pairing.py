"""Reference choice for utterance corpora: which of a speaker's utterances may be a reference (duration bounds),
and K distinct seeded draws among them per target."""
import numpy as np

from ...errors import DataError
from ..audio import header_seconds


def reference_pools(utts, config):
    """{speaker: indices of its utterances that may be a reference}: all of them, or those whose header duration
    is within [min_ref_seconds, max_ref_seconds] (an unreadable file is no reference)."""
    pools = {}
    for i, u in enumerate(utts):
        pools.setdefault(u.speaker, [])
        if not config.bounded() or config.in_bounds(_seconds(u.audio)):
            pools[u.speaker].append(i)
    return pools


def _seconds(path):
    try:
        return header_seconds(path)
    except DataError:
        return None


def draw_references(pool, i, config):
    """Up to `refs_per_target` distinct indices of `pool` other than target `i`, drawn without replacement with
    `default_rng([seed, i])` (the first draw is the single draw of refs_per_target 1)."""
    rng, left, out = np.random.default_rng([config.seed, i]), [j for j in pool if j != i], []
    while left and len(out) < config.refs_per_target:
        out.append(left.pop(int(rng.integers(len(left)))))
    return out


def no_reference(u, config):
    """The `no_reference` problem of target `u`, naming its file:line (and the bounds when they excluded some)."""
    bounds = (f" within [--min_ref_seconds {config.min_ref_seconds}, --max_ref_seconds {config.max_ref_seconds}]"
              if config.bounded() else "")
    return DataError(f"{u.file}:{u.line} (sample {u.uid}): speaker {u.speaker!r} has no other utterance{bounds} to "
                     "use as the voice reference", "no_reference", u.file, u.line, u.uid)

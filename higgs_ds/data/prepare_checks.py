"""The checks `higgs-ds prepare` runs before sharding: the speaker-skew warning, the pair check (pair_check.py) with
its embeddings split across ranks, and the quality columns (quality.py). Scorers are injected (`Scorers`), so
`data/` never imports `evaluation/`.

Pair check under a launcher: rank r embeds every `world`-th distinct clip into `DIR/pair_embeddings/<key>-<r>.npz`;
every rank waits for all parts and scores the same pairs from them, so all ranks keep the same samples; rank 0
writes `DIR/pair_check.json`, which a rerun of the same command reuses without embedding anything.
"""
import dataclasses
import json
import logging
import os
import time

import numpy as np

from ..errors import DataError
from .sources import sources_id

log = logging.getLogger(__name__)
PAIR_CHECK = "pair_check.json"  # the pair check's report, beside spec.json
EMBEDDINGS = "pair_embeddings"


@dataclasses.dataclass
class Scorers:
    """Factories of the scorers a prepare may need, injected by the caller (the CLI: `evaluation/`'s): `embed()`
    gives `embed(path) -> speaker vector or None`, `dnsmos()` gives `dnsmos(wav 16 kHz) -> float`, `asr(dir)` gives
    `asr(wav 16 kHz, text, language) -> {"cer", "wer", ...}`."""
    embed: object = None
    dnsmos: object = None
    asr: object = None


def write_quality_columns(output, items, pairs, config, scorers):
    """DIR/quality.arrow (quality.py) for the samples being prepared; reused when it is there already."""
    from .filters import QUALITY
    from .quality import quality_rows, write_quality

    path = os.path.join(output, QUALITY)
    if not os.path.isfile(path):
        dnsmos = scorers.dnsmos() if config.dnsmos else None
        asr = scorers.asr(config.asr_model) if config.asr_model else None
        write_quality(path, quality_rows(items, (pairs or {}).get("pair_sims"), dnsmos, asr=asr))


def verify_pairs(items, sources, output, config, scorers, rank=0, world=1, poll_s=2.0):
    """(items less the pairs below --min_pair_sim, the pair report or None, whether this rank must write it to
    DIR/pair_check.json once the dir is claimed: rank 0 when it was computed here)."""
    from .pair_check import check_pairs, speaker_skew

    if warning := speaker_skew(items):
        log.warning("%s", warning)
    if config is None or not config.enabled():
        return items, None, False
    key = sources_id(sources, dataclasses.asdict(config))
    report = _stored_pair_report(os.path.join(output, PAIR_CHECK), key)
    if report is not None:
        dropped = set(report["dropped"])
        return [it for it in items if isinstance(it, DataError) or it.where not in dropped], report, False
    vectors = shared_embeddings(items, os.path.join(output, EMBEDDINGS), key, scorers, rank, world, poll_s)
    kept, report = check_pairs(items, vectors.get, config)
    kept_ids = {id(it) for it in kept}
    report.update(key=key, dropped=[it.where for it in items if id(it) not in kept_ids])
    if rank == 0:
        for line in report["warnings"]:
            log.warning("%s", line)
    return kept, report, rank == 0


def shared_embeddings(items, folder, key, scorers, rank, world, poll_s=2.0):
    """{clip path: vector or None} of every clip of the pairs in `items`: this rank embeds every `world`-th
    distinct clip (sorted) into `folder/<key>-<rank>.npz` (kept for a rerun), then reads every rank's part."""
    from ..durable import write_atomic
    from .pair_check import embed_clips, pair_clips

    pairs = [pair_clips(it.sample) for it in items if not isinstance(it, DataError)]
    paths = sorted({p for clips in pairs if clips for p in clips})
    os.makedirs(folder, exist_ok=True)
    mine = os.path.join(folder, f"{key}-{rank}.npz")
    if not os.path.isfile(mine):
        part = embed_clips(paths[rank::world], scorers.embed())
        dim = next((len(v) for v in part.values() if v is not None), 0)
        vecs = np.stack([np.zeros(dim) if v is None else v for v in part.values()]) if part else np.zeros((0, 0))
        ok = np.array([v is not None for v in part.values()], dtype=bool)
        write_atomic(mine, lambda f: np.savez(f, paths=np.array(list(part), dtype=str), vectors=vecs, ok=ok),
                     f".tmp{os.getpid()}")
    out = {}
    for r in range(world):
        part = os.path.join(folder, f"{key}-{r}.npz")
        while not os.path.isfile(part):
            time.sleep(poll_s)
        with np.load(part) as z:
            out.update({p: v if good else None for p, v, good in zip(z["paths"].tolist(), z["vectors"], z["ok"])})
    return out


def _stored_pair_report(path, key):
    if os.path.isfile(path):
        with open(path) as f:
            report = json.load(f)
        if report.get("key") == key:
            return report
    return None


def pair_summary(report):
    """The counts of a pair report that `higgs-ds prepare` prints."""
    return {k: len(report[k]) if isinstance(report[k], list) else report[k]
            for k in ("clips_embedded", "pairs_scored", "pairs_dropped", "suspect_pairs", "suspect_speakers")}


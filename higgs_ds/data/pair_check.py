"""Voice-cloning pairs verified at prepare time: a speaker-similarity score per (reference, target) pair and a
centroid per speaker, from an injected `embed(path) -> vector or None` (the caller's speaker encoder; each clip is
embedded once however many pairs use it). The report names suspect pairs (below the threshold) and suspect
speakers (their clips split into two clusters, or many of them are closer to another speaker's centroid);
`min_pair_sim` drops the pairs below it. `speaker_skew` warns, without embedding, when one speaker holds most
samples."""
import dataclasses
from typing import Optional

import numpy as np

from ..config import option
from ..errors import DataError
from .chatml import is_audio_turn

SUSPECT_SIM = 0.75  # resemblyzer d-vectors: same voice ~0.89 (min ~0.75), different voices ~0.73 (NOTES.md)
MISASSIGNED_SHARE = 0.25  # a speaker with more of its clips closer to another speaker's centroid is suspect


@dataclasses.dataclass
class PairCheckConfig:
    """`higgs-ds prepare` flags of the pair check (off by default: about 0.3 s per distinct clip on one core)."""
    check_pairs: bool = option(False, "score every (reference, target) pair with the built-in speaker encoder "
                                      "(the one `higgs-ds score` uses), build a centroid per speaker and write "
                                      "the suspect pairs and speakers to DIR/pair_check.json")
    min_pair_sim: Optional[float] = option(None, "drop pairs whose reference-target speaker similarity is below "
                                                 "this (implies --check_pairs; counted in the report)", type=float,
                                           minimum=-1.0)

    def enabled(self):
        return self.check_pairs or self.min_pair_sim is not None

    def threshold(self):
        return SUSPECT_SIM if self.min_pair_sim is None else self.min_pair_sim


def pair_clips(sample):
    """(reference audio, target audio) of a voice-cloning sample: the last assistant audio before `start_index`
    and the audio at it; None for a sample without both."""
    msgs, start = sample.messages, sample.start_index or 0
    refs = [m for m in msgs[:start] if is_audio_turn(m)]
    if not refs or start >= len(msgs) or not is_audio_turn(msgs[start]):
        return None
    return _audio_url(refs[-1]), _audio_url(msgs[start])


def _audio_url(message):
    content = message.content if isinstance(message.content, list) else [message.content]
    return next(c.audio_url for c in content if hasattr(c, "audio_url"))


def embed_clips(paths, embed):
    """{path: unit vector, or None when it has no speech or does not decode}, each path embedded once."""
    out = {}
    for path in paths:
        if path not in out:
            try:
                vec = embed(path)
            except DataError:  # validation names the file; it is no evidence about its speaker
                vec = None
            out[path] = None if vec is None else np.asarray(vec, dtype=np.float64) / (np.linalg.norm(vec) + 1e-12)
    return out


def _centroid(vectors):
    c = np.mean(vectors, axis=0)
    return c / (np.linalg.norm(c) + 1e-12)


def _two_clusters(vectors, iters=10):
    """2-means on unit vectors (cosine), seeded by the clip farthest from the centroid and the clip farthest from
    that one; returns the two cluster centroids and sizes."""
    sims = vectors @ _centroid(vectors)
    a = vectors[int(np.argmin(sims))]
    b = vectors[int(np.argmin(vectors @ a))]
    for _ in range(iters):
        side = vectors @ a >= vectors @ b
        if side.all() or not side.any():
            return None
        a, b = _centroid(vectors[side]), _centroid(vectors[~side])
    return a, b, int(side.sum()), int((~side).sum())


def speaker_stats(clips, threshold):
    """{speaker: stats} from {speaker: [unit vectors of its distinct clips]}: centroid, clips, mean similarity to
    the centroid, clips closer to another speaker's centroid than to their own (leave-one-out), and a split into
    two clusters of at least two clips each whose centroids are less similar than `threshold`."""
    centroids = {s: _centroid(v) for s, v in clips.items()}
    matrix = np.stack(list(centroids.values()))  # row k: the k-th speaker of `clips`
    out = {}
    for k, (spk, vecs) in enumerate(clips.items()):
        vecs, n = np.stack(vecs), len(vecs)
        misassigned = 0
        if n > 1 and len(centroids) > 1:
            own = vecs.sum(axis=0) - vecs  # its speaker's centroid without it (unnormalised)
            own_sim = np.sum(own * vecs, axis=1) / (np.linalg.norm(own, axis=1) + 1e-12)
            other_sim = np.delete(vecs @ matrix.T, k, axis=1).max(axis=1)
            misassigned = int(np.sum(other_sim > own_sim))
        split = _two_clusters(vecs) if n >= 4 else None
        split_sim = float(split[0] @ split[1]) if split and min(split[2:]) >= 2 else None
        out[spk] = {"clips": n, "centroid_sim_mean": round(float(np.mean(vecs @ centroids[spk])), 4),
                    "misassigned": misassigned, "split_sim": None if split_sim is None else round(split_sim, 4),
                    "centroid": [round(float(x), 5) for x in centroids[spk]]}
        out[spk]["suspect"] = bool(misassigned > MISASSIGNED_SHARE * n
                                   or (split_sim is not None and split_sim < threshold))
    return out


def check_pairs(items, embed, config):
    """(items without the pairs below `config.min_pair_sim`, report dict). `items`: `SourcedSample`s and
    `DataError`s (passed through)."""
    pairs = [(it, pair_clips(it.sample)) for it in items if not isinstance(it, DataError)]
    pairs = [(it, p) for it, p in pairs if p is not None]
    vectors = embed_clips([path for _, p in pairs for path in p], embed)
    by_speaker, scored, dropped = {}, [], set()
    for it, (ref, tgt) in pairs:
        for path in (ref, tgt):
            if vectors[path] is not None:
                by_speaker.setdefault(str(it.sample.speaker), {})[path] = vectors[path]
        if vectors[ref] is None or vectors[tgt] is None:
            continue
        sim = float(vectors[ref] @ vectors[tgt])
        scored.append((it, sim))
        if config.min_pair_sim is not None and sim < config.min_pair_sim:
            dropped.add(id(it))
    kept = [it for it in items if id(it) not in dropped]
    speakers = speaker_stats({s: list(v.values()) for s, v in by_speaker.items()}, config.threshold())
    return kept, _report(scored, speakers, len(vectors), len(dropped), config)


def _report(scored, speakers, num_clips, num_dropped, config):
    sims = np.array([s for _, s in scored]) if scored else np.zeros(0)
    threshold = config.threshold()
    suspect = [{"sample": it.where, "speaker": it.sample.speaker, "sim": round(s, 4)}
               for it, s in scored if s < threshold]
    report = {"clips_embedded": num_clips, "pairs_scored": len(scored), "threshold": threshold,
              "min_pair_sim": config.min_pair_sim, "pairs_dropped": num_dropped,
              "pair_sim": {k: round(float(f(sims)), 4) if sims.size else None
                           for k, f in (("mean", np.mean), ("p5", lambda x: np.percentile(x, 5)), ("min", np.min))},
              "suspect_pairs": suspect, "suspect_speakers": sorted(s for s, v in speakers.items() if v["suspect"]),
              "speakers": speakers, "pair_sims": {it.where: round(s, 4) for it, s in scored}}
    report["warnings"] = pair_warnings(report)
    return report


def pair_warnings(report):
    """Lines that say what the report found and its likely cause."""
    out, n = [], report["pairs_scored"]
    if report["suspect_pairs"]:
        out.append(f"{len(report['suspect_pairs'])} of {n} pairs have a reference-target speaker similarity below "
                   f"{report['threshold']} (first: {report['suspect_pairs'][0]['sample']})")
    if bad := report["suspect_speakers"]:
        out.append(f"{len(bad)} of {len(report['speakers'])} speakers look like several voices (their clips split "
                   f"into clusters or sit closer to other speakers): {', '.join(bad[:5])}; the speaker labels are "
                   "likely wrong (mislabelled, or taken from a directory level or a default instead of the speaker)")
    return out


def speaker_skew(items, share=0.5, min_samples=10):
    """A warning when one speaker holds more than `share` of at least `min_samples` samples, naming it, where its
    samples come from and the likely cause; None otherwise."""
    samples = [it for it in items if not isinstance(it, DataError)]
    if len(samples) < min_samples:
        return None
    counts = {}
    for it in samples:
        counts[it.sample.speaker] = counts.get(it.sample.speaker, 0) + 1
    top = max(counts, key=counts.get)
    if counts[top] <= share * len(samples):
        return None
    files = sorted({it.file for it in samples if it.sample.speaker == top})
    return (f"speaker {top!r} holds {counts[top]} of {len(samples)} samples ({100 * counts[top] / len(samples):.0f} "
            f"%; from {files[0]}{' and others' if len(files) > 1 else ''}): a speaker label taken from a directory "
            "level or a default (e.g. 'unknown') instead of the real speaker is the usual cause, and then most "
            "references are another voice; fine only for a single-speaker corpus such as LJSpeech")

"""Corpora of single utterances (audio, transcript, speaker): voice-cloning pairs are built here, seeded.

Each utterance becomes the target of one five-message sample whose reference is another utterance of the same
speaker, drawn with `numpy.random.default_rng([seed, index])`; a speaker with one utterance has no reference
(a `no_reference` problem naming the utterance). Embedded audio (parquet bytes, tar members) is written once
to `$HIGGS_DS_CACHE/extracted/<source id>/`, so the rest of the pipeline reads files as for ChatML.
"""
import dataclasses
import hashlib
import json
import os

import numpy as np

from ..chatml import DataError, parse_sample
from ..synthetic import voice_cloning_sample
from .base import Source


@dataclasses.dataclass
class Utterance:
    audio: str  # a file path
    text: str
    speaker: str
    file: str  # where it came from, for problems: file and 1-based line / row / member number
    line: int
    uid: str


class UtteranceSource(Source):
    def __init__(self, path, seed=0):
        super().__init__(path)
        self.seed = seed

    def utterances(self):
        """`Utterance`s in a fixed order, or `DataError`s for unreadable entries."""
        raise NotImplementedError

    def identity(self):
        return {**super().identity(), "seed": self.seed}

    def extract_dir(self):
        from ...constants import cache_root

        key = hashlib.sha256(json.dumps(super().identity(), default=str).encode()).hexdigest()[:16]
        path = os.path.join(cache_root(), "extracted", key)
        os.makedirs(path, exist_ok=True)
        return path

    def iter_items(self):
        utts = []
        for u in self.utterances():
            if isinstance(u, DataError):
                yield u
            else:
                utts.append(u)
        by_speaker = {}
        for i, u in enumerate(utts):
            by_speaker.setdefault(u.speaker, []).append(i)
        for i, u in enumerate(utts):
            others = [j for j in by_speaker[u.speaker] if j != i]
            if not others:
                yield DataError(f"{u.file}:{u.line} (sample {u.uid}): speaker {u.speaker!r} has no other utterance "
                                "to use as the voice reference", "no_reference", u.file, u.line, u.uid)
                continue
            ref = utts[others[int(np.random.default_rng([self.seed, i]).integers(len(others)))]]
            obj = {"id": u.uid, **voice_cloning_sample(ref.audio, ref.text, u.audio, u.text, u.speaker)}
            try:
                yield parse_sample(obj, u.file, u.line)
            except DataError as e:
                yield e


def write_once(path, data):
    """Write extracted audio bytes unless an identical-size file is already there (atomic)."""
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        return path
    from ...durable import write_atomic

    write_atomic(path, data, f".tmp{os.getpid()}")
    return path

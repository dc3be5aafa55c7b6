"""Corpora of single utterances (audio, transcript, speaker): voice-cloning pairs are built here, seeded.

Each utterance becomes the target of `refs_per_target` five-message samples, each with a different reference:
another utterance of the same speaker (within the reference duration bounds), drawn in pairing.py; a target with
no candidate gives a `no_reference` problem naming the utterance. Embedded audio (parquet bytes, tar members) is
written once to `$HIGGS_DS_CACHE/extracted/<source id>/`, so the rest of the pipeline reads files as for ChatML.
"""
import dataclasses
import hashlib
import json
import os

from ...errors import DataError
from ..chatml import parse_sample
from ..synthetic import voice_cloning_sample
from .base import Source
from .pairing import draw_references, no_reference, reference_pools


@dataclasses.dataclass
class Utterance:
    audio: str  # a file path
    text: str
    speaker: str
    file: str  # where it came from, for problems: file and 1-based line / row / member number
    line: int
    uid: str
    language: str = None  # a language tag when the corpus names one (else the source's --language, if any)


class UtteranceSource(Source):
    def utterances(self):
        """`Utterance`s in a fixed order, or `DataError`s for unreadable entries."""
        raise NotImplementedError

    def identity(self):
        return {**super().identity(), **self.config.pairing()}

    def extract_dir(self):
        from ...constants import cache_root

        key = hashlib.sha256(json.dumps(Source.identity(self), default=str).encode()).hexdigest()[:16]
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
        pools, many = reference_pools(utts, self.config), self.config.refs_per_target > 1
        for i, u in enumerate(utts):
            refs = draw_references(pools[u.speaker], i, self.config)
            if not refs:
                yield no_reference(u, self.config)
            for k, j in enumerate(refs, start=1):
                ref = utts[j]
                obj = {"id": f"{u.uid}#{k}" if many else u.uid, "language": u.language,
                       **voice_cloning_sample(ref.audio, ref.text, u.audio, u.text, u.speaker)}
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

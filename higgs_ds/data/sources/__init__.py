"""Data sources behind one interface: each yields `SourcedSample`s (or `DataError`s) in a fixed order.

The one place a new corpus format is added: write a `Source` subclass (base.py) and list it in `source_types`.
"""
import os

from ...errors import UnknownLayout
from .base import Source, sources_id  # noqa: F401
from .chatml_source import ChatMLSource
from .common_voice import CommonVoiceSource
from .hf_datasets import ArrowSource, ParquetSource
from .libritts import LibriTTSSource
from .ljspeech import LJSpeechSource
from .manifest import ManifestSource
from .vctk import VCTKSource
from .webdataset import WebDatasetSource

UNKNOWN_DIR = ("a directory none of these layouts describes: the speaker of its utterances cannot be told apart "
               "from the paths; write a manifest (TSV, CSV or JSONL with target_audio, target_text and speaker "
               "columns) and prepare it: `higgs-ds prepare --data utts.tsv --pair_by_speaker` (docs/DATA.md)")


def source_types():
    """Every source type, most specific first (ChatML last: it takes any other file)."""
    return [ParquetSource, ArrowSource, WebDatasetSource, CommonVoiceSource, VCTKSource, LJSpeechSource,
            LibriTTSSource, ManifestSource, ChatMLSource]


def open_sources(paths, config=None):
    """A `Source` per path (the first type that accepts it); `UnknownLayout` naming a path none accepts. `config`: a
    `SourceConfig` (seed and bounds of the pairs that utterance corpora build, content hashing)."""
    out = []
    for path in [paths] if isinstance(paths, str) else paths:
        for cls in source_types():
            if cls.accepts(path):
                out.append(cls(path, config))
                break
        else:
            from ..prepared_check import check_finished

            check_finished(path)  # the dir of a prepare that did not finish: say how to finish it
            names = ", ".join(c.__name__ for c in source_types())
            why = f": {UNKNOWN_DIR}" if os.path.isdir(path) else ""
            raise UnknownLayout(f"{path}: not a data source this version reads ({names}){why}", "file", path, 0)
    return out

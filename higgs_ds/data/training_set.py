"""The one way training, evaluation and the preference stage read data: a source (a ChatML file, a manifest, a
corpus: data/sources/) is prepared once into the cache (auto_prepare.py: keyed, shared by the first node's ranks,
reused by later starts), which validates it; then it is opened memory-mapped as a `PreparedDataset`
(open_prepared.py: identity check, stored report, --on_bad_sample, --filter, --quick_test). A prepared dir
(`higgs-ds prepare --output DIR`) opens as it is."""
import dataclasses
import os

from ..errors import DataError
from .auto_prepare import auto_prepare
from .open_prepared import open_prepared
from .prepared import is_prepared
from .prepared_check import read_index
from .validate import Problem, ValidationConfig, ValidationReport


def training_limits(validation=None, whisper=False):
    """The validation of a training prepare: `validation` (a `ValidationConfig`) plus, for a model with the Whisper
    tower, the checks of its audio-in clips (part of the cache key)."""
    return dataclasses.replace(validation or ValidationConfig(), whisper_audio=bool(whisper))


def prepare_training_set(path, tokenizer_path, audio_tokenizer_path, validation=None, whisper=False, rank=0,
                         content_hash=False):
    """The prepared dir of `path`: `path` itself when it is one (None stays None), else its copy in the cache,
    prepared when missing (every sample validated: a `DataError` listing every problem stops every rank)."""
    if path is None or is_prepared(path):
        return path
    if not os.path.exists(path):
        raise DataError(f"{path}: data file not found", "file", path, 0)
    root = auto_prepare(path, tokenizer_path, audio_tokenizer_path, training_limits(validation, whisper), rank,
                        content_hash=content_hash)
    index = read_index(root)
    if not index["num_samples"]:  # --on_bad_sample skip dropped every sample: nothing to train or validate on
        listing = ValidationReport(problems=[Problem(**p) for p in index["problems"]]).problem_listing()
        raise DataError(f"{path}: none of its {index['report']['samples_read']} samples is usable:\n{listing}",
                        "empty_data")
    return root


def open_training_set(path, tokenizer, tokenizer_path, audio_tokenizer_path, validation=None, whisper_processor=None,
                      limit=None, rules=None, rank=0, content_hash=False):
    """The `PreparedDataset` of `path` (any source, or a prepared dir), prepared first when it is a source;
    `whisper_processor`: a model with the Whisper tower (items carry their audio-in waveforms); `limit`: the first
    samples only (--quick_test); `rules`: --filter's."""
    root = prepare_training_set(path, tokenizer_path, audio_tokenizer_path, validation, whisper_processor is not None,
                                rank, content_hash)
    return open_prepared(root, tokenizer, audio_tokenizer_path, validation, whisper_processor, limit, rules)

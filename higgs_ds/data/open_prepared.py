"""Open a prepared dir for training: check it is intact (prepared_check.py) and was prepared with this run's
tokenizers, apply --on_bad_sample."""
import logging
import os

from ..errors import DataError
from .prepared import PreparedDataset
from .prepared_check import open_checked
from .validate import Problem, ValidationReport, finish_report, summary_text

log = logging.getLogger(__name__)


class _Subset(PreparedDataset):
    """The first `limit` samples (--quick_test)."""

    def __init__(self, base, limit):
        self.__dict__.update(base.__dict__)
        self._len = min(limit, len(base))
        self.lengths = base.lengths[:self._len]

    def __len__(self):
        return self._len

    @property
    def samples(self):
        return PreparedDataset.samples.fget(self)[:self._len]

    @property
    def languages(self):
        return PreparedDataset.languages.fget(self)[:self._len]


def check_identity(ds, tokenizer, audio_tokenizer_path):
    """A prepared dir holds token ids and codes of one text and one audio tokenizer: refuse any other."""
    from .prepare import audio_tokenizer_id, text_tokenizer_id

    spec = ds.index["spec"]
    tok_dir = getattr(tokenizer, "name_or_path", None)
    if tok_dir and os.path.isdir(tok_dir) and text_tokenizer_id(tok_dir) != spec["text_tokenizer_id"]:
        raise DataError(f"{ds.root}: prepared with another text tokenizer ({spec['text_tokenizer_id']}) than "
                        f"{tok_dir}: prepare it again with --tokenizer_path {tok_dir}", "file", ds.root, 0)
    if audio_tokenizer_path and audio_tokenizer_id(audio_tokenizer_path) != spec["audio_tokenizer_id"]:
        raise DataError(f"{ds.root}: prepared with another audio tokenizer ({spec['audio_tokenizer_id']}) than "
                        f"{audio_tokenizer_path}: prepare it again with --audio_tokenizer_path "
                        f"{audio_tokenizer_path}", "file", ds.root, 0)


def open_prepared(root, tokenizer=None, audio_tokenizer_path=None, validation=None, whisper_processor=None, limit=None,
                  rules=None):
    """The `PreparedDataset` at `root`; its stored bad samples fail the run unless --on_bad_sample skip. `rules`:
    --filter's rules on the quality columns (filters.py): a view of the samples that pass them. With
    `whisper_processor` (a model with the Whisper tower) its items carry their audio-in waveforms."""
    ds = open_checked(root)
    check_identity(ds, tokenizer, audio_tokenizer_path)
    if whisper_processor is not None:
        if not ds.index["spec"]["limits"].get("whisper_audio"):
            raise DataError(f"{root}: prepared without the audio-in checks a model with the Whisper tower needs: "
                            "prepare it again with `higgs-ds prepare --whisper_audio` (or train on its sources: "
                            "training prepares them so)", "file", root, 0)
        ds.whisper_processor = whisper_processor  # the collator's (loaders.build_loader); waveforms per item
    stored_report(root, getattr(validation, "on_bad_sample", "fail"), ds.index)
    ds = _Subset(ds, limit) if limit else ds
    if rules:
        from .filters import filter_prepared

        ds, _ = filter_prepared(ds, rules)
    return ds


def stored_report(root, on_bad_sample="fail", index=None):
    """The validation report a prepared dir stored at prepare time (its counts as a dict), logged and with
    --on_bad_sample applied: the same listing and counts as validating its sources (`higgs-ds validate`)."""
    index = index or open_checked(root).index
    report = ValidationReport(problems=[Problem(**p) for p in index["problems"]])
    report.num_read = index["report"]["samples_read"]
    finish_report(report, on_bad_sample, index["report"])
    log.info("%s (prepared)\n%s", root, summary_text(index["report"]))
    return index["report"]

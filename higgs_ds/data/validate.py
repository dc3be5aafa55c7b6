"""Check every sample of a ChatML data set before training; collect ALL problems, then fail or skip them.

A problem is (file, line, sample_id, kind, message). Kinds are listed in docs/DATA.md. Notes (resampled audio,
stereo audio) are not problems: the sample is used as the serve engine would use it (mono, 24 kHz).
"""
import collections
import dataclasses
import logging
import math

import numpy as np

from ..config import option
from ..constants import FRAMES_PER_SECOND, SAMPLE_RATE
from ..errors import DataError
from .audio import probe_audio
from .chatml import iter_chatml
from .prepared_check import check_finished

log = logging.getLogger(__name__)
MAX_LISTED = 50
UNSET = "(none)"  # the language count of samples without a `language`


@dataclasses.dataclass
class ValidationConfig:
    """Data validation (docs/DATA.md): limits, and what to do with a bad sample."""
    min_audio_seconds: float = option(0.1, "shorter audio clips are bad samples")
    max_audio_seconds: float = option(60.0, "longer audio clips are bad samples")
    max_tokens: int = option(8192, "longest sample in tokens (text tokens + audio frames at 25 Hz); longer ones "
                                   "are bad samples", minimum=1)
    on_bad_sample: str = option("fail", "fail: stop after listing every bad sample; skip: use the good ones (bad "
                                        "ones are counted and listed in the log)", choices=("fail", "skip"))
    require_pairs: bool = False  # every sample must be a preference pair (a `rejected` audio): the DPO stage
    whisper_audio: bool = False  # audio-in clips checked for a model with the Whisper tower (tokens.audio_in_urls)


@dataclasses.dataclass
class Problem:
    file: str
    line: int
    sample_id: str
    kind: str
    message: str

    @classmethod
    def from_error(cls, e):
        return cls(e.file, e.line, e.sample_id, e.kind, str(e))

    def __str__(self):
        return f"[{self.kind}] {self.message}"


@dataclasses.dataclass
class ValidationReport:
    """The good samples, every problem and note, and corpus statistics."""
    samples: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(default_factory=list)
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    num_read: int = 0
    speakers: set = dataclasses.field(default_factory=set)
    languages: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # good samples per tag
    audio_seconds: float = 0.0
    token_lengths: list = dataclasses.field(default_factory=list)
    audio_files: set = dataclasses.field(default_factory=set)

    def to_dict(self):
        lengths = np.asarray(self.token_lengths or [0])
        return {
            "samples_read": self.num_read, "samples_ok": len(self.samples), "samples_bad": len(self.problems),
            "speakers": len(self.speakers), "audio_files": len(self.audio_files), "audio_hours": round(self.audio_seconds / 3600, 4),
            "token_length": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)} | {"max": int(lengths.max())},
            "problems_by_kind": dict(collections.Counter(p.kind for p in self.problems)), "notes": dict(self.notes),
            "languages": dict(sorted(self.languages.items())),
        }

    def add_audio(self, url, info):
        """Count an audio file once (duration, notes on resampling and downmixing)."""
        if url in self.audio_files:
            return
        self.audio_files.add(url)
        self.audio_seconds += info.seconds
        if info.sample_rate != SAMPLE_RATE:
            self.notes[f"resampled_{info.sample_rate}_to_{SAMPLE_RATE}"] += 1
        if info.channels > 1:
            self.notes["stereo_downmixed"] += 1

    def summary(self):
        return summary_text(self.to_dict())

    def problem_listing(self):
        shown = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            shown.append(f"... and {len(self.problems) - MAX_LISTED} more")
        return "\n".join(shown)


def summary_text(d):
    """The report's summary lines from its `to_dict()` form (also stored in a prepared dir's index)."""
    t = d["token_length"]
    lines = [f"data: {d['samples_read']} samples read, {d['samples_ok']} ok, {d['samples_bad']} bad; "
             f"{d['speakers']} speakers; {d['audio_hours']:.3f} h of audio (unique files)",
             f"tokens per sample (text + audio frames): p50 {t['p50']} p90 {t['p90']} p99 {t['p99']} max {t['max']}"]
    if any(k != UNSET for k in d.get("languages", {})):
        lines.append("samples per language: " + ", ".join(f"{k} {v}" for k, v in d["languages"].items()))
    if d["problems_by_kind"]:
        lines.append("problems by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(d["problems_by_kind"].items())))
    if d["notes"]:
        lines.append("notes: " + ", ".join(f"{k} {v}" for k, v in sorted(d["notes"].items())))
    return "\n".join(lines)


class Validator:
    """Checks samples one by one; audio files are probed once however many samples share them."""

    def __init__(self, tokenizer=None, limits=None):
        self.tokenizer, self.limits = tokenizer, limits or ValidationConfig()
        self._audio = {}

    def _audio_info(self, path, where):
        if path not in self._audio:
            try:
                self._audio[path] = probe_audio(path, where)
            except DataError as e:
                self._audio[path] = e
        info = self._audio[path]
        if isinstance(info, DataError):
            raise DataError(f"{where}: {str(info).split(': ', 1)[1]}", info.kind)
        return info

    def check(self, src, report):
        """Raise `DataError` for a bad sample; otherwise add its statistics and notes to `report`."""
        from boson_multimodal.data_types import AudioContent, TextContent

        lim, where = self.limits, src.where
        contents = [c for m in src.sample.messages for c in (m.content if isinstance(m.content, list) else [m.content])]
        for c in contents:
            if isinstance(c, TextContent) and not c.text.strip():
                raise DataError(f"{where}: empty text content", "empty_text")
        if lim.require_pairs and src.rejected is None:
            raise DataError(f"{where}: not a preference pair: no 'rejected' audio (docs/PREFERENCE.md)", "rejected")
        frames, infos, audio = 0, {}, [c for c in contents if isinstance(c, AudioContent)]
        for c in audio + ([src.rejected] if src.rejected else []):
            info = infos[c.audio_url] = self._audio_info(c.audio_url, where)
            if info.seconds < lim.min_audio_seconds or info.seconds > lim.max_audio_seconds:
                raise DataError(f"{where}: audio {c.audio_url} lasts {info.seconds:.2f} s, outside "
                                f"[--min_audio_seconds {lim.min_audio_seconds}, --max_audio_seconds "
                                f"{lim.max_audio_seconds}]", "audio_duration")
            frames += math.ceil(info.seconds * FRAMES_PER_SECOND)
        if src.rejected is not None:  # the longer of the chosen and rejected sequences
            frames -= min(math.ceil(infos[u].seconds * FRAMES_PER_SECOND) for u in
                          (src.rejected.audio_url, audio[-1].audio_url))
        length = frames
        if self.tokenizer is not None:
            from .tokens import tokenize_sample

            length += len(tokenize_sample(src, self.tokenizer)[0])
            if length > lim.max_tokens:
                raise DataError(f"{where}: {length} tokens (text + audio frames at {FRAMES_PER_SECOND} Hz) exceed "
                                f"--max_tokens {lim.max_tokens}", "too_long")
        for url, info in infos.items():
            report.add_audio(url, info)
        report.token_lengths.append(length)
        if src.sample.speaker:
            report.speakers.add(src.sample.speaker)
        report.languages[src.language or UNSET] += 1


def validate_data(paths, tokenizer=None, limits=None, on_bad_sample=None):
    """Read and check every sample of `paths`; returns a `ValidationReport` whose `samples` are the good ones.

    on_bad_sample="fail" raises one `DataError` listing every problem; "skip" drops bad samples and logs them.
    """
    limits = limits or ValidationConfig()
    on_bad_sample = on_bad_sample or limits.on_bad_sample
    if on_bad_sample not in ("fail", "skip"):
        raise ValueError(f"on_bad_sample must be 'fail' or 'skip', got {on_bad_sample!r}")
    validator, report = Validator(tokenizer, limits), ValidationReport()
    for path in [paths] if isinstance(paths, str) else paths:
        for item in iter_chatml(path):
            report.num_read += 1
            if not isinstance(item, DataError):
                try:
                    validator.check(item, report)
                    report.samples.append(item)
                    continue
                except DataError as e:
                    e.file, e.line, e.sample_id = item.file, item.line, item.sample_id
                    item = e
            report.problems.append(Problem.from_error(item))
    if report.num_read == 0:
        raise DataError(f"{', '.join([paths] if isinstance(paths, str) else paths)}: no samples (empty data file)",
                        "empty_data")
    return finish_report(report, on_bad_sample)


def finish_report(report, on_bad_sample="fail", stats=None):
    """Apply --on_bad_sample: raise one `DataError` listing every problem ("fail"), or log them ("skip").
    `stats`: the report's `to_dict()` when only its problems were kept (a prepared dir's index)."""
    if report.problems:
        msg = (f"{len(report.problems)} bad sample(s) of {report.num_read}:\n{report.problem_listing()}\n"
               f"{summary_text(stats or report.to_dict())}")
        if on_bad_sample == "fail":
            raise DataError(msg + "\n(fix them, or pass --on_bad_sample skip to train on the good ones)", "invalid")
        log.warning("skipping %s", msg)
    return report


def validate_files(paths, tokenizer, config=None):
    """Validate each data file (`--validate_data_only`); log its summary; return its `ValidationReport`s."""
    reports = []
    for path in paths:
        check_finished(path)  # a prepared dir left by a killed prepare: say how to finish it, not "not found"
        report = validate_data(path, tokenizer, config)
        log.info("%s\n%s", path, report.summary())
        reports.append(report)
    return reports

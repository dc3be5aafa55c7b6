"""A manifest: one row per utterance or per sample, in a `.tsv` / `.csv` (header line) or `.jsonl` with the columns
`ref_audio, ref_text, target_audio, target_text, speaker` (audio paths relative to the manifest's dir).

A row with a `ref_audio` is one voice-cloning sample as it stands; a row without one (or every row, with
`pair_by_speaker`) is an utterance whose reference is drawn among the same speaker's other rows, as for every
utterance corpus (utterances.py): those rows need only `target_audio`, `target_text` and `speaker`.
"""
import csv
import json
import os

from ...errors import DataError
from ..chatml import parse_sample
from ..samples import voice_cloning_sample
from .utterances import Utterance, UtteranceSource

COLUMNS = ("ref_audio", "ref_text", "target_audio", "target_text", "speaker")
EXTENSIONS = (".tsv", ".csv", ".jsonl")


def _header(path):
    """The column names of a manifest (a JSONL's first row's keys), or () when it is not one."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return ()
    if path.endswith(".jsonl"):
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return ()
        return tuple(row) if isinstance(row, dict) and "messages" not in row else ()
    return tuple(next(csv.reader([first], delimiter="\t" if path.endswith(".tsv") else ",")))


def read_manifest(path):
    """(1-based line, row dict or `DataError`) per row of a .tsv / .csv (header line) or .jsonl manifest."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.endswith(".jsonl"):
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        yield n, DataError(f"{path}:{n}: malformed JSON: {e.msg}", "json", path, n)
            return
        reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        for row in reader:
            yield reader.line_num, row


class ManifestSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return os.path.isfile(path) and path.endswith(EXTENSIONS) and "target_audio" in _header(path)

    def _rows(self):
        """(line, row) per row with its audio paths absolute, or a `DataError` naming its line."""
        base = os.path.dirname(os.path.abspath(self.path))
        for n, row in read_manifest(self.path):
            if isinstance(row, DataError):
                yield n, row
                continue
            row = {k: str(row.get(k) or "").strip() for k in COLUMNS}
            paired = bool(row["ref_audio"]) and not self.config.pair_by_speaker
            need = COLUMNS[:4] if paired else COLUMNS[2:]
            missing = [c for c in need if not row[c]]
            if missing:
                yield n, DataError(f"{self.path}:{n}: missing column(s) {missing}", "schema", self.path, n)
                continue
            for k in ("ref_audio", "target_audio"):
                row[k] = os.path.join(base, row[k]) if row[k] else ""
            yield n, (row if paired else Utterance(row["target_audio"], row["target_text"], row["speaker"],
                                                   self.path, n, f"line{n}"))

    def utterances(self):
        for _, row in self._rows():
            if isinstance(row, (Utterance, DataError)):
                yield row

    def iter_items(self):
        """The rows that are samples as they stand, then the utterances' pairs (utterances.py)."""
        for n, row in self._rows():
            if isinstance(row, dict):
                obj = voice_cloning_sample(row["ref_audio"], row["ref_text"], row["target_audio"],
                                           row["target_text"], row["speaker"] or None)
                try:
                    yield parse_sample({"id": f"line{n}", **obj}, self.path, n)
                except DataError as e:
                    yield e
        yield from super().iter_items()

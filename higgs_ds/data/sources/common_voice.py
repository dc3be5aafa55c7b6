"""Common Voice: a release dir with `validated.tsv` and `clips/` (MP3), or one of its `.tsv` files (`train.tsv`,
...). Tab-separated with a header; quotes are literal. The speaker is `client_id`, the transcript `sentence`."""
import csv
import os

from ...errors import DataError
from .utterances import Utterance, UtteranceSource

COLUMNS = ("client_id", "path", "sentence")


class CommonVoiceSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        if os.path.isdir(path):
            return os.path.isfile(os.path.join(path, "validated.tsv")) and os.path.isdir(os.path.join(path, "clips"))
        return path.endswith(".tsv") and os.path.isdir(os.path.join(os.path.dirname(path) or ".", "clips"))

    def _tsv(self):
        return os.path.join(self.path, "validated.tsv") if os.path.isdir(self.path) else self.path

    def files(self):
        return [self._tsv()]

    def utterances(self):
        tsv = self._tsv()
        clips = os.path.join(os.path.dirname(tsv), "clips")
        with open(tsv, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, [])
            if missing := [c for c in COLUMNS if c not in header]:
                yield DataError(f"{tsv}:1: no column {', '.join(missing)} (a Common Voice .tsv has "
                                f"{', '.join(COLUMNS)})", "schema", tsv, 1)
                return
            for n, fields in enumerate(rows, start=2):
                row = dict(zip(header, fields))
                if any(not row.get(c) for c in COLUMNS):
                    yield DataError(f"{tsv}:{n}: empty {'/'.join(COLUMNS)} field", "schema", tsv, n)
                    continue
                uid = os.path.splitext(row["path"])[0]
                yield Utterance(os.path.join(clips, row["path"]), row["sentence"].strip(), row["client_id"], tsv,
                                n, uid)

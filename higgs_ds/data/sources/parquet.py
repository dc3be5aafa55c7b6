"""HF `datasets` parquet files with an Audio column (`{"bytes", "path"}` structs: audio embedded, as corpora ship
on the Hub), a transcript column and a speaker column; rows are numbered from 1 in problems."""
import os

from ..chatml import DataError
from .utterances import Utterance, UtteranceSource, write_once

TEXT_COLUMNS = ("text", "text_normalized", "transcript", "sentence", "normalized_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")


class ParquetSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return path.endswith(".parquet")

    def utterances(self):
        import pyarrow.parquet as pq

        table = pq.read_table(self.path)
        names = table.column_names
        text_col = next((c for c in TEXT_COLUMNS if c in names), None)
        spk_col = next((c for c in SPEAKER_COLUMNS if c in names), None)
        if "audio" not in names or text_col is None:
            yield DataError(f"{self.path}:0: needs an 'audio' column and one of {TEXT_COLUMNS} (has {names})",
                            "schema", self.path, 0)
            return
        out = self.extract_dir()
        for i, row in enumerate(table.select(["audio", text_col] + ([spk_col] if spk_col else [])).to_pylist()):
            audio, uid = row["audio"] or {}, f"row{i + 1}"
            if not isinstance(audio, dict) or not audio.get("bytes"):
                yield DataError(f"{self.path}:{i + 1} (sample {uid}): no embedded audio bytes", "missing_audio",
                                self.path, i + 1, uid)
                continue
            ext = os.path.splitext(audio.get("path") or "")[1] or ".wav"
            path = write_once(os.path.join(out, f"{i:08d}{ext}"), audio["bytes"])
            speaker = str(row[spk_col]) if spk_col and row[spk_col] is not None else "unknown"
            yield Utterance(path, str(row[text_col] or ""), speaker, self.path, i + 1, uid)

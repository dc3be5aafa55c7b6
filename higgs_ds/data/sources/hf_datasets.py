"""HF `datasets` tables with an Audio column: parquet files as corpora ship on the Hub, a `save_to_disk` dir
(`data-*.arrow` + `dataset_info.json` + `state.json`) or one cache `.arrow` file (Arrow IPC stream). The audio
column is the one the table's `datasets` features call `Audio` (else `audio`): `{bytes, path}` structs, embedded
bytes or a path to an existing file. Rows are numbered from 1 in problems, per file."""
import glob
import json
import os

from ...errors import DataError
from .utterances import Utterance, UtteranceSource, write_once

TEXT_COLUMNS = ("text", "text_normalized", "normalized_text", "transcript", "transcription", "sentence")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")


def audio_column(table):
    """The column the table's `datasets` features (schema metadata `huggingface`) call `Audio`, else `audio`."""
    meta = (table.schema.metadata or {}).get(b"huggingface")
    features = json.loads(meta).get("info", {}).get("features", {}) if meta else {}
    return next((k for k, v in features.items() if isinstance(v, dict) and v.get("_type") == "Audio"), "audio")


class TableSource(UtteranceSource):
    def tables(self):
        """(file, pyarrow Table) per file of the source, in order."""
        raise NotImplementedError

    def utterances(self):
        out = self.extract_dir()
        for k, (path, table) in enumerate(self.tables()):
            names, audio_col = table.column_names, audio_column(table)
            text_col = next((c for c in TEXT_COLUMNS if c in names), None)
            spk_col = next((c for c in SPEAKER_COLUMNS if c in names), None)
            if audio_col not in names or text_col is None or spk_col is None:
                yield DataError(f"{path}:0: needs an Audio column, a transcript column ({', '.join(TEXT_COLUMNS)}) "
                                f"and a speaker column ({', '.join(SPEAKER_COLUMNS)}; without one the speakers "
                                f"cannot be told apart); it has {names}", "schema", path, 0)
                continue
            rows = table.select([audio_col, text_col, spk_col]).to_pylist()
            for i, row in enumerate(rows, start=1):
                audio, why = _audio_file(row[audio_col], path, os.path.join(out, f"{k:04d}-{i:08d}"))
                if row[spk_col] is None:
                    audio, why = None, "no speaker"
                if audio is None:
                    yield DataError(f"{path}:{i} (sample row{i}): {why}", "schema" if why == "no speaker" else
                                    "missing_audio", path, i, f"row{i}")
                    continue
                yield Utterance(audio, str(row[text_col] or ""), str(row[spk_col]), path, i, f"row{i}")


def _audio_file(audio, table_path, extracted_stem):
    """(file path, None) for one Audio cell (embedded bytes written once), or (None, the reason there is none)."""
    if not isinstance(audio, dict):
        return None, "no audio"
    if audio.get("bytes"):
        ext = os.path.splitext(audio.get("path") or "")[1] or ".wav"
        return write_once(extracted_stem + ext, audio["bytes"]), None
    path = audio.get("path")
    for candidate in (path, os.path.join(os.path.dirname(table_path), path or "")) if path else ():
        if os.path.isfile(candidate):
            return candidate, None
    return None, f"no embedded audio bytes and no file at its path {path!r}"


class ParquetSource(TableSource):
    @classmethod
    def accepts(cls, path):
        return path.endswith(".parquet")

    def tables(self):
        import pyarrow.parquet as pq

        yield self.path, pq.read_table(self.path)


class ArrowSource(TableSource):
    """A `save_to_disk` dir (its `state.json` lists the `data-*.arrow` files) or one `.arrow` file."""

    @classmethod
    def accepts(cls, path):
        if os.path.isdir(path):
            return any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json"))
        return path.endswith(".arrow")

    def files(self):
        if not os.path.isdir(self.path):
            return [self.path]
        state = os.path.join(self.path, "state.json")
        if os.path.isfile(state):
            with open(state) as f:
                names = [d["filename"] for d in json.load(f).get("_data_files", [])]
            return [os.path.join(self.path, n) for n in names]
        return sorted(glob.glob(os.path.join(self.path, "*.arrow")))

    def tables(self):
        import pyarrow as pa

        if os.path.isfile(os.path.join(self.path, "dataset_dict.json")):
            splits = sorted(d for d in os.listdir(self.path) if os.path.isdir(os.path.join(self.path, d)))
            raise DataError(f"{self.path}: a DatasetDict; pass one split dir ({', '.join(splits)})", "schema",
                            self.path, 0)
        for path in self.files():
            try:
                with pa.memory_map(path) as source:
                    yield path, pa.ipc.open_stream(source).read_all()
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{path}: not an Arrow IPC stream of a `datasets` table ({e})", "file", path, 0)

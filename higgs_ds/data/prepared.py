"""The prepared dataset: tokenized samples and their audio codes in Arrow IPC files, memory-mapped on read.

Layout of a prepared dir (written by `higgs-ds prepare --data SOURCE... --output DIR`, see prepare.py):
    spec.json                  what is being prepared: sources, tokenizer identities, limits, shard size
    shards/shard-NNNNN.arrow   one Arrow IPC stream per shard (the format HF `datasets` caches use)
    shards/shard-NNNNN.json    that shard's validation results, written after its .arrow: "this shard is done"
    index.json                 written last, atomically: shards, sample count, the merged validation report

Columns (one row per good sample, in source order): `input_ids`, `label_ids` (int32 lists), `audio_codes` (int16
list: the sample's clips concatenated along frames, `(num_codebooks, frames)` row-major), `audio_frames` (int32
list, frames per clip), `num_tokens` (text tokens + audio frames: what the token-budget sampler reads), `speaker`,
`source` (`file:line`), `sample_id`, `sample` (the ChatML JSON with absolute audio paths), `language` (the sample's
tag or null), `audio_in` (the absolute paths of the audio-in clips, user/system-turn audio, in order: the waveforms
a model with the Whisper tower hears, loaded when the row is read), `rejected_codes` / `rejected_frames` (a
preference pair's rejected clip, laid out as `audio_codes`; null for a sample that is not a pair). Inspect with
`pyarrow.ipc.open_stream(path).read_all()` or `datasets.Dataset.from_file(path)`.
"""
import json
import os

import numpy as np
import torch

from ..checksums import file_crc32
from ..constants import SAMPLE_RATE
from ..durable import write_atomic
from ..errors import DataError

FORMAT_VERSION = 2  # 2: audio_in, rejected_codes, rejected_frames
INDEX, SPEC, SHARDS = "index.json", "spec.json", "shards"
FAILED = "FAILED"  # a preparing rank's error, for the ranks waiting on the index or its shards


def schema():
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("label_ids", pa.list_(pa.int32())),
                      ("audio_codes", pa.large_list(pa.int16())), ("audio_frames", pa.list_(pa.int32())),
                      ("num_tokens", pa.int32()), ("speaker", pa.string()), ("source", pa.string()),
                      ("sample_id", pa.string()), ("sample", pa.string()), ("language", pa.string()),
                      ("audio_in", pa.list_(pa.string())), ("rejected_codes", pa.large_list(pa.int16())),
                      ("rejected_frames", pa.int32())])


def is_prepared(path):
    return path is not None and os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX))


def shard_name(k):
    return os.path.join(SHARDS, f"shard-{k:05d}")


def write_shard_rows(path, rows, tmp_suffix):
    """Write `rows` (dicts of the schema's columns) as one Arrow IPC stream at `path`, atomically; returns its
    `bytes` and `crc32` (what the shard's .json and index.json record, checked when the dir is opened)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=schema())

    def write(f):
        with pa.ipc.new_stream(f, table.schema) as writer:
            writer.write_table(table)

    write_atomic(path, write, tmp_suffix)
    return {"bytes": os.path.getsize(path), "crc32": file_crc32(path)}


def make_row(src, input_tokens, label_tokens, clips, sample_json, audio_in=(), rejected=None):
    """One row from a tokenized sample, its clips' codes (each `(num_codebooks, frames)`), its audio-in paths and a
    pair's rejected clip codes (None: not a pair)."""
    codes = np.concatenate([np.asarray(c, dtype=np.int16) for c in clips], axis=1) if clips else np.zeros((0, 0))
    frames = [int(c.shape[1]) for c in clips]
    return {"input_ids": list(map(int, input_tokens)), "label_ids": list(map(int, label_tokens)),
            "audio_codes": codes.astype(np.int16).ravel().tolist(), "audio_frames": frames,
            "num_tokens": len(input_tokens) + sum(frames), "speaker": src.sample.speaker,
            "source": f"{src.file}:{src.line}", "sample_id": src.sample_id, "sample": json.dumps(sample_json),
            "language": src.language, "audio_in": list(audio_in),
            "rejected_codes": None if rejected is None else np.asarray(rejected, np.int16).ravel().tolist(),
            "rejected_frames": None if rejected is None else int(rejected.shape[1])}


def open_stream(path):
    """The shard's record batches, memory-mapped: the data stays in the (shared) page cache, not in this process."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(path, "r")).read_all().combine_chunks()


class _Column:
    """A list column as two zero-copy numpy views (offsets, values): row i is values[offsets[i]:offsets[i+1]]."""

    def __init__(self, chunked):
        arr = chunked.chunk(0) if chunked.num_chunks else None
        self.offsets = arr.offsets.to_numpy() if arr is not None else np.zeros(1, dtype=np.int64)
        self.values = arr.values.to_numpy(zero_copy_only=True) if arr is not None else np.zeros(0)

    def __getitem__(self, i):
        return self.values[self.offsets[i]:self.offsets[i + 1]]


class PreparedDataset(torch.utils.data.Dataset):
    """Map-style dataset over a prepared dir: no audio decode, no hashing, no tokenization; O(1) memory per rank
    in the corpus size apart from one int32 length per sample (the token-budget sampler's column)."""

    whisper_processor = None

    def __init__(self, root, index=None):
        """`index`: the dir's index.json already read (prepared_check.open_checked reads and checks it first)."""
        if index is None:
            with open(os.path.join(root, INDEX)) as f:
                index = json.load(f)
        self.index = index
        if self.index.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{root}: prepared with format {self.index.get('format_version')}, this version reads "
                            f"{FORMAT_VERSION} (it stores audio-in paths and rejected clips): prepare it again "
                            f"(`higgs-ds prepare --data SOURCE... --output {root}`; a copy that training made under "
                            "$HIGGS_DS_CACHE/prepared/ is not reused: the next start prepares a new one)",
                            "file", root, 0)
        self.root, self.num_codebooks = root, self.index["num_codebooks"]
        self._tables = [open_stream(os.path.join(root, s["name"] + ".arrow")) for s in self.index["shards"]]
        self._tables = [t for t in self._tables if t.num_rows]
        self._cols = [{k: _Column(t.column(k)) for k in ("input_ids", "label_ids", "audio_codes", "audio_frames",
                                                         "rejected_codes")} for t in self._tables]
        self.lengths = np.concatenate([t.column("num_tokens").to_numpy() for t in self._tables]) \
            if self._tables else np.zeros(0, dtype=np.int32)
        self._starts = np.cumsum([0] + [t.num_rows for t in self._tables])
        self._samples = None

    def __len__(self):
        return int(self._starts[-1])

    def _locate(self, idx):
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        shard = int(np.searchsorted(self._starts, idx, side="right") - 1)
        return shard, idx - int(self._starts[shard])

    def num_tokens(self, idx):
        return int(self.lengths[idx])

    def codes(self, idx):
        """The sample's clips, each an int16 `(num_codebooks, frames)` view."""
        shard, row = self._locate(idx)
        cols = self._cols[shard]
        flat, frames = cols["audio_codes"][row], cols["audio_frames"][row]
        grid = flat.reshape(self.num_codebooks, -1) if len(frames) else flat.reshape(0, 0)
        return np.split(grid, np.cumsum(frames)[:-1], axis=1) if len(frames) else []

    def rejected(self, idx):
        """A preference pair's rejected clip as an int16 `(num_codebooks, frames)` view; None when not a pair."""
        shard, row = self._locate(idx)
        if self._tables[shard].column("rejected_frames")[row].as_py() is None:
            return None
        return self._cols[shard]["rejected_codes"][row].reshape(self.num_codebooks, -1)

    def waveforms(self, idx):
        """The audio-in clips' waveforms (the Whisper tower's input), loaded as the serve engine loads audio."""
        from .audio import load_waveform

        where = f"{self.row(idx, 'source')} (sample {self.row(idx, 'sample_id')})"
        return [torch.from_numpy(load_waveform(url, SAMPLE_RATE, where)) for url in self.row(idx, "audio_in")]

    def __getitem__(self, idx):
        from .tokens import dataset_sample

        shard, row = self._locate(idx)
        cols = self._cols[shard]
        clips = [torch.from_numpy(c.astype(np.int64)) for c in self.codes(idx)]
        waves = self.waveforms(idx) if self.whisper_processor is not None else ()
        return dataset_sample(torch.from_numpy(cols["input_ids"][row].astype(np.int64)),
                              torch.from_numpy(cols["label_ids"][row].astype(np.int64)), clips, waves, SAMPLE_RATE)

    @property
    def samples(self):
        """`SourcedSample`s rebuilt from the `sample` column (audio previews need prompts); built on first use."""
        if self._samples is None:
            from .chatml import parse_sample

            self._samples = []
            for t in self._tables:
                for src, raw in zip(t.column("source").to_pylist(), t.column("sample").to_pylist()):
                    file, line = src.rsplit(":", 1)
                    self._samples.append(parse_sample(json.loads(raw), file, int(line)))
        return self._samples

    @property
    def languages(self):
        """Each sample's language tag (None when unset), from the `language` column."""
        return [lang for t in self._tables for lang in t.column("language").to_pylist()]

    def row(self, idx, column):
        shard, row = self._locate(idx)
        return self._tables[shard].column(column)[row].as_py()


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1), f".tmp{os.getpid()}")

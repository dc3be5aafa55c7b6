"""On-disk cache of audio codes, so training never runs the audio tokenizer.

Layout of a cache dir (one per audio tokenizer; default `$HIGGS_DS_CACHE/codes/<tokenizer_id>/`):
    index.json            {"tokenizer_id", "num_codebooks", "entries": {sha256(audio bytes): [shard, offset, frames]}}
    shard-00000.npy ...   int16 (num_codebooks, total_frames), memory-mapped on read
Shards are written before the index, each atomically (tmp + rename), so a killed `prepare_codes` loses at most
the shard in progress and a rerun skips every file already indexed. Codes are what the serve engine computes:
`librosa.load(path, sr=24000)` then `audio_tokenizer.encode(wav, 24000)` (see audio.py).
"""
import fcntl
import hashlib
import json
import logging
import os
import time

import numpy as np

from ..durable import file_sha256, write_atomic

log = logging.getLogger(__name__)
MIB = 1 << 20


def tokenizer_id(tokenizer_dir):
    """Identity of an audio tokenizer dir: hash of config.json and of model.pth's size, first and last MiB."""
    h = hashlib.sha256(open(os.path.join(tokenizer_dir, "config.json"), "rb").read())
    weights = os.path.join(tokenizer_dir, "model.pth")
    size = os.path.getsize(weights)
    with open(weights, "rb") as f:
        h.update(str(size).encode() + f.read(MIB))
        f.seek(max(0, size - MIB))
        h.update(f.read(MIB))
    return h.hexdigest()[:16]


def default_cache_dir(tokenizer_dir):
    from ..constants import cache_root as root

    return os.path.join(root(), "codes", tokenizer_id(tokenizer_dir))


class CodeCache:
    """Read and append audio codes; `get(key)` returns an int16 (num_codebooks, frames) memory-mapped view."""

    def __init__(self, root, tokenizer_id):
        self.root, self.tokenizer_id = root, tokenizer_id
        os.makedirs(root, exist_ok=True)
        self._shards = {}
        self.reload()

    @classmethod
    def for_tokenizer(cls, tokenizer_dir, cache_dir=None):
        return cls(cache_dir or default_cache_dir(tokenizer_dir), tokenizer_id(tokenizer_dir))

    @property
    def index_path(self):
        return os.path.join(self.root, "index.json")

    def reload(self):
        self.index = {"tokenizer_id": self.tokenizer_id, "num_codebooks": None, "shards": [], "entries": {}}
        if os.path.exists(self.index_path):
            with open(self.index_path) as f:
                index = json.load(f)
            if index["tokenizer_id"] != self.tokenizer_id:
                raise ValueError(f"code cache {self.root} holds codes of audio tokenizer {index['tokenizer_id']}, not "
                                 f"{self.tokenizer_id}: use another --code_cache_dir")
            self.index = index

    def __len__(self):
        return len(self.index["entries"])

    def __contains__(self, key):
        return key in self.index["entries"]

    def get(self, key):
        entry = self.index["entries"].get(key)
        if entry is None:
            return None
        shard, offset, frames = entry
        if shard not in self._shards:
            self._shards[shard] = np.load(os.path.join(self.root, shard), mmap_mode="r")
        return self._shards[shard][:, offset:offset + frames]

    def add(self, codes_by_key):
        """Write one shard holding `{key: int (num_codebooks, frames) array}` and index it (atomic, locked)."""
        if not codes_by_key:
            return
        arrays = [np.asarray(c) for c in codes_by_key.values()]
        if any(a.min() < 0 or a.max() > np.iinfo(np.int16).max for a in arrays if a.size):
            raise ValueError("audio codes out of int16 range")
        with open(os.path.join(self.root, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload()  # another writer may have added shards
            name = f"shard-{len(self.index['shards']):05d}.npy"
            data = np.concatenate(arrays, axis=1).astype(np.int16)
            tmp_suffix = f".tmp{os.getpid()}"  # per process: a killed writer's leftover is never reopened
            write_atomic(os.path.join(self.root, name), lambda f: np.save(f, data), tmp_suffix)
            offset = 0
            for key, a in zip(codes_by_key, arrays):
                self.index["entries"][key] = [name, offset, int(a.shape[1])]
                offset += a.shape[1]
            self.index["shards"].append(name)
            self.index["num_codebooks"] = int(data.shape[0])
            write_atomic(self.index_path, json.dumps(self.index), tmp_suffix)


def audio_urls(data_files):
    """Unique audio paths of the schema-valid samples of `data_files` (bad samples are counted and skipped)."""
    from boson_multimodal.data_types import AudioContent

    from ..errors import DataError
    from .chatml import iter_chatml

    urls, bad = {}, 0
    for path in data_files:
        for item in iter_chatml(path):
            if isinstance(item, DataError):
                bad += 1
                continue
            for m in item.sample.messages:
                for c in m.content if isinstance(m.content, list) else [m.content]:
                    if isinstance(c, AudioContent):
                        urls.setdefault(c.audio_url, item.where)
            if item.rejected is not None:  # a preference pair's rejected audio
                urls.setdefault(item.rejected.audio_url, item.where)
    if bad:
        log.warning("%d bad samples skipped while collecting audio (run `higgs-ds validate` for the list)", bad)
    return urls


def prepare_codes(data_files, audio_tokenizer_path, cache_dir=None, audio_tokenizer=None, shard_size=256,
                  show_progress=True):
    """Encode every audio file of `data_files` not yet in the cache; resumable. Returns counts and timing."""
    from tqdm import tqdm

    from ..models.audio_tokenizer import load_audio_tokenizer
    from .audio import encode_audio

    cache = CodeCache.for_tokenizer(audio_tokenizer_path, cache_dir)
    urls = audio_urls([data_files] if isinstance(data_files, str) else data_files)
    keys = {url: file_sha256(url) for url in urls if os.path.isfile(url)}
    todo = {}
    for url, key in keys.items():
        if key not in cache:
            todo.setdefault(key, url)  # identical files are encoded once
    stats = {"audio_files": len(urls), "missing_files": len(urls) - len(keys), "cached_before": len(keys) -
             sum(1 for k in keys.values() if k in todo), "encoded": 0, "failed": 0, "cache_dir": cache.root}
    if todo and audio_tokenizer is None:
        audio_tokenizer = load_audio_tokenizer(audio_tokenizer_path)
    t0, pending = time.time(), {}
    for key, url in tqdm(todo.items(), desc="encoding audio", unit="file", disable=not show_progress):
        try:
            pending[key] = encode_audio(audio_tokenizer, url, urls[url]).numpy()
        except Exception as e:  # a corrupt file must not stop the others; validation reports it
            log.warning("not cached: %s", e)
            stats["failed"] += 1
            continue
        stats["encoded"] += 1
        if len(pending) >= shard_size:
            cache.add(pending)
            pending = {}
    cache.add(pending)
    stats["seconds"] = round(time.time() - t0, 3)
    return stats

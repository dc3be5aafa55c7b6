"""The `Source` interface and the dispatch from a path to the source class that reads it."""
import dataclasses
import hashlib
import json
import os

from ...durable import file_sha256
from ...errors import DataError
from .config import SourceConfig


class Source:
    """One corpus: `iter_items()` yields a `SourcedSample` or a `DataError` per sample (never stops early), always
    in the same order; `identity()` is cheap (paths, sizes, mtimes) unless `config.content_hash` adds a sha256 of
    each file's content."""

    def __init__(self, path, config=None):
        self.path = path  # as given: problems name it as `higgs-ds validate` does
        self.config = config or SourceConfig()
        self._hashes = None

    @classmethod
    def accepts(cls, path):
        raise NotImplementedError

    def iter_items(self):
        raise NotImplementedError

    def items(self):
        """`iter_items()`, where a sample naming no language gets the source's (`config.language`, --language)."""
        for it in self.iter_items():
            if self.config.language and not isinstance(it, DataError) and it.language is None:
                it = dataclasses.replace(it, language=self.config.language)
            yield it

    def files(self):
        """The files whose change means a changed corpus (default: the path itself)."""
        return [self.path]

    def identity(self):
        files = [f for f in self.files() if os.path.exists(f)]
        stats = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
        out = {"type": type(self).__name__, "path": os.path.abspath(self.path), "files": stats}
        if self.config.language:  # it changes the prepared rows
            out["language"] = self.config.language
        if self.config.content_hash:  # hashed once per Source: the plan and the extraction dir both ask
            self._hashes = self._hashes or [file_sha256(f) for f in files]
            out["sha256"] = self._hashes
        return out


def sources_id(sources, extra=None):
    """A short hash of the sources' identities (and of `extra`, e.g. tokenizer ids and limits)."""
    blob = json.dumps([s.identity() for s in sources] + [extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

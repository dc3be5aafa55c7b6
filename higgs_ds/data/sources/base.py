"""The `Source` interface and the dispatch from a path to the source class that reads it."""
import hashlib
import json
import os

from ..chatml import DataError


class SourceError(DataError):
    """A path no source type can read."""


class Source:
    """One corpus: `iter_items()` yields a `SourcedSample` or a `DataError` per sample (never stops early), always
    in the same order; `identity()` is cheap (paths, sizes, mtimes: no content hash)."""

    def __init__(self, path):
        self.path = path  # as given: problems name it as `higgs-ds validate` does

    @classmethod
    def accepts(cls, path):
        raise NotImplementedError

    def iter_items(self):
        raise NotImplementedError

    def files(self):
        """The files whose change means a changed corpus (default: the path itself)."""
        return [self.path]

    def identity(self):
        stats = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in self.files() if os.path.exists(f)]
        return {"type": type(self).__name__, "path": os.path.abspath(self.path), "files": stats}


def sources_id(sources, extra=None):
    """A short hash of the sources' identities (and of `extra`, e.g. tokenizer ids and limits)."""
    blob = json.dumps([s.identity() for s in sources] + [extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

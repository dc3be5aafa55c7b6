"""ChatML JSONL (one sample a line) or a JSON list: the format `higgs_ds.data.chatml` reads (docs/DATA.md)."""
import os

from ..chatml import iter_chatml
from .base import Source


class ChatMLSource(Source):
    @classmethod
    def accepts(cls, path):
        return not os.path.isdir(path)  # .jsonl, .json, and any other file: iter_chatml names its problems

    def iter_items(self):
        yield from iter_chatml(self.path)

"""How `higgs-ds prepare` reads sources: reference choice for utterance corpora, and the identity that keys the
prepared data. Fields are flags of `higgs-ds prepare` (`content_hash` also of train.py, for its prepare cache)."""
import dataclasses
from typing import Optional

from ...config import option
from ...languages import language_flag


def content_hash_option():
    """The --content_hash flag (the same in `higgs-ds prepare` and train.py, whose prepare cache it keys)."""
    return option(False, "key prepared data (`higgs-ds prepare`, training's prepare cache) by a sha256 of every "
                         "source file's content too, not only by its path, size and mtime (reads every file once "
                         "per run; sees a rewrite that keeps size and mtime)")


@dataclasses.dataclass
class SourceConfig:
    """Pairing of utterance corpora (seeded by `seed`, the --seed flag) and source identity."""
    min_ref_seconds: Optional[float] = option(None, "utterance corpora: only utterances at least this long are "
                                                    "drawn as references (duration from the file header; default: "
                                                    "no bound)", type=float, minimum=0)
    max_ref_seconds: Optional[float] = option(None, "utterance corpora: only utterances at most this long are "
                                                    "drawn as references (default: no bound)", type=float, minimum=0)
    refs_per_target: int = option(1, "utterance corpora: samples per target utterance, each with a different "
                                     "reference of the same speaker (fewer when the speaker has fewer; ids "
                                     "<uid>#1..#K when K > 1)", minimum=1)
    language: Optional[str] = option(None, "language tag (ISO 639-1/3 or BCP-47, e.g. vi, zh-Hant) of every sample "
                                           "of these sources that names none in its `language` field (counted per "
                                           "language in the report, scored in it; docs/LANGUAGES.md)",
                                     type=language_flag, metavar="TAG")
    pair_by_speaker: bool = option(False, "manifests: draw every row's reference among the same speaker's other "
                                          "rows (seeded by --seed), even for rows that name a ref_audio")
    content_hash: bool = content_hash_option()
    seed: int = 0

    def bounded(self):
        return self.min_ref_seconds is not None or self.max_ref_seconds is not None

    def in_bounds(self, seconds):
        lo, hi = self.min_ref_seconds, self.max_ref_seconds
        return seconds is not None and (lo is None or seconds >= lo) and (hi is None or seconds <= hi)

    def pairing(self):
        """What changes the pairs (part of an utterance source's identity)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("content_hash", "language")}

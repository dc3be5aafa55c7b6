"""Training-time filters on the quality columns a prepare stored (`--filter "dnsmos>=3.0,pair_sim>=0.6"`): rules
are parsed once, applied to `DIR/quality.arrow` (no scorer runs again), and each rule's drops are counted."""
import dataclasses
import operator
import os
import re

from ..errors import ConfigError, DataError
from .quality import COLUMNS

QUALITY = "quality.arrow"
PREPARE_FLAG = {"pair_sim": "--check_pairs", "dnsmos": "--dnsmos", "cer": "--asr_model", "wer": "--asr_model"}
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|==|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class Rule:
    column: str
    op: str
    value: float

    def __str__(self):
        return f"{self.column}{self.op}{self.value:g}"

    def keeps(self, x):
        """A sample whose column was not measured (null) fails the rule: it is not known to pass."""
        return x is not None and OPS[self.op](x, self.value)


def parse_filter(text):
    """[Rule] from `"col>=x,col<=y"`; `ConfigError` naming the bad rule or column."""
    rules = []
    for part in (p for p in (text or "").split(",") if p.strip()):
        m = RULE.match(part)
        if m is None:
            raise ConfigError(f"--filter: {part.strip()!r} is not <column><op><number> (ops: {', '.join(OPS)})")
        if m.group(1) not in COLUMNS:
            raise ConfigError(f"--filter: unknown column {m.group(1)!r} (quality columns: {', '.join(COLUMNS)})")
        rules.append(Rule(m.group(1), m.group(2), float(m.group(3))))
    return rules


def read_quality(root):
    """{(source, sample_id): {column: value}} of a prepared dir; `DataError` when it was prepared without
    --quality."""
    import pyarrow as pa

    path = os.path.join(root, QUALITY)
    if not os.path.isfile(path):
        raise DataError(f"{root}: has no {QUALITY}: prepare it with --quality (and --check_pairs for pair_sim, "
                        "--dnsmos for dnsmos, --asr_model for cer and wer) to filter on quality", "file", root, 0)
    with pa.memory_map(path) as f:
        rows = pa.ipc.open_stream(f).read_all().to_pylist()
    return {(r.pop("source"), r.pop("sample_id")): r for r in rows}


def select(keys, quality, rules):
    """(indices of `keys` ((source, sample_id) per sample) that pass every rule, {rule: samples it dropped}); a
    sample is counted under the first rule it fails. A rule on a column no sample has is a `ConfigError`."""
    for rule in rules:
        if quality and all(q.get(rule.column) is None for q in quality.values()):
            raise ConfigError(f"--filter {rule}: no sample has {rule.column!r} (prepare with "
                              f"{PREPARE_FLAG.get(rule.column, '--quality')})")
    kept, dropped = [], {str(r): 0 for r in rules}
    for i, key in enumerate(keys):
        row = quality.get(key, {})
        failed = next((r for r in rules if not r.keeps(row.get(r.column))), None)
        if failed is None:
            kept.append(i)
        else:
            dropped[str(failed)] += 1
    return kept, dropped


class Filtered:
    """The samples of a prepared dataset that pass the filters: a view by index (the base stays memory-mapped);
    other attributes are the base's."""

    def __init__(self, base, indices, dropped=None):
        """`dropped`: {rule: samples it dropped} (reported in metrics.json)."""
        import numpy as np

        self.base, self.indices, self.dropped = base, np.asarray(indices, dtype=np.int64), dict(dropped or {})
        self.lengths = base.lengths[self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[int(self.indices[i])]

    def __getattr__(self, name):
        if name == "base":  # not set yet (unpickling in a DataLoader worker)
            raise AttributeError(name)
        return getattr(self.base, name)

    def num_tokens(self, i):
        return int(self.lengths[i])

    def codes(self, i):
        return self.base.codes(int(self.indices[i]))

    def row(self, i, column):
        return self.base.row(int(self.indices[i]), column)

    def rejected(self, i):
        return self.base.rejected(int(self.indices[i]))

    def waveforms(self, i):
        return self.base.waveforms(int(self.indices[i]))

    @property
    def languages(self):
        base = self.base.languages
        return [base[i] for i in self.indices]

    @property
    def samples(self):
        base = self.base.samples
        return [base[i] for i in self.indices]


def filter_prepared(ds, text):
    """(`ds` or a `Filtered` view of the samples passing `text`'s rules, {rule: samples dropped}); logs the
    counts. An empty `text`: `ds` unchanged."""
    import logging

    rules = parse_filter(text)
    if not rules:
        return ds, {}
    keys = [(ds.row(i, "source"), ds.row(i, "sample_id")) for i in range(len(ds))]
    kept, dropped = select(keys, read_quality(ds.root), rules)
    logging.getLogger(__name__).info("%s: --filter kept %d of %d samples; dropped by %s", ds.root, len(kept),
                                     len(keys), ", ".join(f"{r}: {n}" for r, n in dropped.items()))
    if not kept:
        raise DataError(f"{ds.root}: --filter {text!r} keeps no sample ({dropped})", "empty_data", ds.root, 0)
    return Filtered(ds, kept, dropped), dropped

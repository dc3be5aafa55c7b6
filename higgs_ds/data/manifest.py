"""Convert a manifest (TSV, CSV or JSONL with ref_audio, ref_text, target_audio, target_text, speaker) to ChatML.

With `pair_by_speaker`, rows need only target_audio, target_text and speaker: each row's reference is another
utterance of the same speaker, drawn with a seeded RNG (speakers with a single utterance are skipped, counted).
"""
import csv
import json
import logging
import os

import numpy as np

from ..errors import DataError
from .samples import voice_cloning_sample

log = logging.getLogger(__name__)
COLUMNS = ("ref_audio", "ref_text", "target_audio", "target_text", "speaker")


def read_manifest(path):
    """Rows of a .tsv / .csv (header line) or .jsonl manifest as dicts, with their 1-based line numbers."""
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: malformed JSON: {e.msg}", "json", path, n) from None
        return
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        for n, row in enumerate(reader, start=2):
            yield n, row


def convert_manifest(path, output, pair_by_speaker=False, seed=0):
    """Write `output` (ChatML JSONL, five-message samples); audio paths are made relative to its directory."""
    base, out_dir = os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.abspath(output))
    need = ("target_audio", "target_text", "speaker") if pair_by_speaker else COLUMNS[:4]
    rows = []
    for n, row in read_manifest(path):
        missing = [c for c in need if not str(row.get(c) or "").strip()]
        if missing:
            raise DataError(f"{path}:{n}: missing column(s) {missing}", "schema", path, n)
        rows.append(row)

    def rel(p):
        return os.path.relpath(p if os.path.isabs(p) else os.path.join(base, p), out_dir)

    if pair_by_speaker:
        rng, by_speaker = np.random.default_rng(seed), {}
        for i, row in enumerate(rows):
            by_speaker.setdefault(row["speaker"], []).append(i)
        lonely = sum(len(v) == 1 for v in by_speaker.values())
        if lonely:
            log.warning("%d speaker(s) have a single utterance: no reference to pair with, skipped", lonely)
    samples = []
    for i, row in enumerate(rows):
        ref = row
        if pair_by_speaker:
            others = [j for j in by_speaker[row["speaker"]] if j != i]
            if not others:
                continue
            ref = {"ref_audio": rows[(j := int(rng.choice(others)))]["target_audio"], "ref_text": rows[j]["target_text"]}
        samples.append(voice_cloning_sample(rel(ref["ref_audio"]), ref["ref_text"], rel(row["target_audio"]),
                                            row["target_text"], row.get("speaker") or None))
    os.makedirs(out_dir, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        for k, sample in enumerate(samples):
            f.write(json.dumps({"id": f"m{k:06d}", **sample}, ensure_ascii=False) + "\n")
    return len(samples)

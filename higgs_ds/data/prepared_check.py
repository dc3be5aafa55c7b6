"""A prepared dir checked as it is opened (training, `higgs-ds validate`, `higgs-ds evaluate`): an unfinished prepare,
an index.json cut short or garbled, a shard missing, cut short, garbled or overwritten with the right size (its
CRC-32 against the one prepare wrote) each stop with one message naming the file and the command that redoes it.

Shards are checked when the dir is opened, before any sample is read: every byte once per start, split between
the ranks when a process group exists (docs/DATA.md gives the cost). Dirs prepared before checksums were written
are opened with the size and Arrow checks only.
"""
import json
import math
import os

from ..checksums import crc32_of_files, file_crc32
from ..constants import cache_root
from ..errors import DamagedFile, InputNotFound
from .prepared import INDEX, SHARDS, SPEC, PreparedDataset, open_stream


def _spec(root):
    try:
        with open(os.path.join(root, SPEC)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def remedy(root, kept="the intact shards"):
    """What to do about a damaged or unfinished prepared dir: the command that redoes only what is missing."""
    if os.path.abspath(root).startswith(os.path.join(os.path.abspath(cache_root()), "prepared") + os.sep):
        return f"delete {root}: the next training start prepares its source again"
    sources = " ".join(s.get("path", "?") for s in _spec(root).get("sources", [])) or "SOURCE..."
    return (f"rerun `higgs-ds prepare --data {sources} --output {root}` with the flags it had: it keeps {kept} and "
            "prepares the rest again")


def check_finished(path):
    """Raise `InputNotFound` when `path` is the dir of a prepare that did not finish (spec.json, no index.json)."""
    if not (os.path.isdir(path) and os.path.isfile(os.path.join(path, SPEC))
            and not os.path.isfile(os.path.join(path, INDEX))):
        return
    spec, shards = _spec(path), os.path.join(path, SHARDS)
    done = len([n for n in os.listdir(shards) if n.endswith(".json")]) if os.path.isdir(shards) else 0
    total = math.ceil(spec.get("num_items", 0) / spec.get("shard_size", 1)) or "?"
    raise InputNotFound(f"{path}: a `higgs-ds prepare` that did not finish ({done} of {total} shards done, no "
                        f"{INDEX}): {remedy(path, f'the {done} finished shards')}")


def read_index(root):
    """The dir's index.json as a dict; `InputNotFound` for an unfinished prepare, `DamagedFile` when it is cut."""
    check_finished(root)
    path = os.path.join(root, INDEX)
    try:
        with open(path) as f:
            index = json.load(f)
        if not isinstance(index, dict) or not isinstance(index["shards"], list):
            raise ValueError("not the index of a prepared dir")
    except json.JSONDecodeError as e:
        raise DamagedFile(f"{path}: cut short or garbled (not JSON: {e.msg} at line {e.lineno}): "
                          f"{remedy(root)}") from None
    except (OSError, ValueError, KeyError) as e:
        raise DamagedFile(f"{path}: unreadable ({e}): {remedy(root)}") from None
    return index


def check_shards(root, index):
    """Every shard `index` lists is there with the size and CRC-32 prepare recorded (`DamagedFile` if not)."""
    listed = [(s["name"] + ".arrow", s.get("bytes"), s.get("crc32")) for s in index["shards"]]
    for rel, size, _ in listed:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            raise DamagedFile(f"{path}: missing (listed in {INDEX}): {remedy(root)}")
        if size is not None and os.path.getsize(path) != size:
            raise DamagedFile(f"{path}: {os.path.getsize(path)} bytes, prepare wrote {size} (cut short or "
                              f"overwritten): {remedy(root)}")
    expected = {rel: crc for rel, _, crc in listed if crc}
    got = crc32_of_files(root, expected)
    for rel in sorted(expected):
        if got[rel] != expected[rel]:
            raise DamagedFile(f"{os.path.join(root, rel)}: CRC-32 {got[rel]}, prepare wrote {expected[rel]} "
                              f"(garbled or overwritten since): {remedy(root)}")


def open_checked(root):
    """The `PreparedDataset` at `root` once its index and shards passed the checks above. Under a process group
    every rank must open it (the CRC-32 work is a collective)."""
    import pyarrow as pa

    index = read_index(root)
    check_shards(root, index)
    try:
        return PreparedDataset(root, index)
    except (pa.ArrowException, OSError) as e:  # a dir from before checksums: name the shard that does not read
        path = next((p for p in (os.path.join(root, s["name"] + ".arrow") for s in index["shards"])
                     if not _reads(p)), root)
        raise DamagedFile(f"{path}: not a readable Arrow stream ({e}): {remedy(root)}") from None


def _reads(path):
    import pyarrow as pa

    try:
        open_stream(path)
        return True
    except (pa.ArrowException, OSError):
        return False


def shard_intact(root, name):
    """Whether shard `name` (shards/shard-NNNNN) is finished and its .arrow still the one its .json describes: a
    prepare rerun keeps these and redoes the others."""
    try:
        with open(os.path.join(root, name + ".json")) as f:
            crc = json.load(f).get("crc32")
    except (OSError, ValueError, AttributeError):
        return False
    arrow = os.path.join(root, name + ".arrow")
    return _reads(arrow) if crc is None else file_crc32(arrow) == crc  # no crc: a shard of an earlier version

"""Damaged prepared dirs (higgs_ds/data/prepared_check.py): a shard cut short, a shard of random bytes, a shard with
one byte changed (size kept, still valid Arrow: only its CRC-32 tells), an index.json cut mid-JSON and a dir left by
a killed prepare each give one `error:` line naming the file and what to do, a documented exit code and no
traceback, through every entry point that opens a prepared dir (train.py, `higgs-ds validate`, `higgs-ds
evaluate`); rerunning the prepare command redoes only the damaged shard."""
import os
import shutil
import subprocess

import pyarrow as pa
import pytest

from higgs_ds.data.prepare import prepare_dataset
from higgs_ds.data.prepared_check import open_checked
from higgs_ds.errors import EXIT_DAMAGED, EXIT_NOINPUT
from tests.helpers import PYTHON, ROOT

SHARD = os.path.join("shards", "shard-00001.arrow")


def _prepare(data, out, tiny_assets):
    return prepare_dataset(data, str(out), tiny_assets.model_path, tiny_assets.audio_tokenizer_path, shard_size=3,
                           show_progress=False)


@pytest.fixture(scope="module")
def prepared(small_data, tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged") / "train"
    assert _prepare([small_data[0]], out, tiny_assets)["shards"] == 3
    return str(out)


def _cut(root):
    path = os.path.join(root, SHARD)
    size = os.path.getsize(path)
    os.truncate(path, size // 2)
    return SHARD, f"{size // 2} bytes, prepare wrote {size}"


def _random_bytes(root):
    path = os.path.join(root, SHARD)
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return SHARD, "CRC-32"


def _one_byte_changed(root):
    path = os.path.join(root, SHARD)
    with open(path, "r+b") as f:  # a byte of the last column's values (the ChatML JSON): still a valid stream
        f.seek(os.path.getsize(path) - 200)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x20]))
    assert pa.ipc.open_stream(pa.memory_map(path)).read_all().num_rows == 3  # Arrow alone does not notice
    return SHARD, "CRC-32"


def _index_cut(root):
    path = os.path.join(root, "index.json")
    os.truncate(path, os.path.getsize(path) // 2)
    return "index.json", "cut short or garbled"


def _unfinished(root):  # killed after shards 0-1: shard 2 and the index never written
    for name in ("index.json", "shards/shard-00002.arrow", "shards/shard-00002.json"):
        os.remove(os.path.join(root, name))
    return "", "a `higgs-ds prepare` that did not finish (2 of 3 shards done, no index.json)"


CASES = {"shard_cut": (_cut, EXIT_DAMAGED), "shard_random_bytes": (_random_bytes, EXIT_DAMAGED),
         "shard_one_byte_changed": (_one_byte_changed, EXIT_DAMAGED), "index_cut": (_index_cut, EXIT_DAMAGED),
         "unfinished_prepare": (_unfinished, EXIT_NOINPUT)}


def _damaged(prepared, tmp_path, case):
    root = str(tmp_path / "prep")
    shutil.copytree(prepared, root)
    rel, says = CASES[case][0](root)
    return root, os.path.join(root, rel).rstrip(os.sep), says


def _entry_points(root, out):
    return {"train.py": [PYTHON, "higgs_ds/train.py", "--train_data", root, "--output_dir", out, "--max_steps", "1",
                         "--no_progress", "--tensorboard_dir", "none"],
            "validate": [PYTHON, "-m", "higgs_ds.cli", "validate", "--data", root],
            "evaluate": [PYTHON, "-m", "higgs_ds.cli", "evaluate", "--data", root]}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_entry_point_names_the_file_and_what_to_do(prepared, small_data, tmp_path, case):
    root, path, says = _damaged(prepared, tmp_path, case)
    for name, cmd in _entry_points(root, str(tmp_path / "out")).items():
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == CASES[case][1], (name, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr and len(errors) == 1, (name, proc.stderr[-3000:])
        assert errors[0].startswith(f"error: {path}: ") and says in errors[0], (name, errors)
        assert f"rerun `higgs-ds prepare --data {small_data[0]} --output {root}`" in errors[0], (name, errors)


@pytest.mark.parametrize("case", sorted(CASES))
def test_opening_names_the_file(prepared, tmp_path, case):
    """The same checks in-process (what every entry point calls): the error type and exit code of each case."""
    root, path, says = _damaged(prepared, tmp_path, case)
    with pytest.raises(Exception) as e:
        open_checked(root)
    assert e.value.exit_code == CASES[case][1] and str(e.value).startswith(f"{path}: ") and says in str(e.value)


def test_rerunning_prepare_redoes_only_the_damaged_shard(prepared, small_data, tiny_assets, tmp_path):
    root, _, _ = _damaged(prepared, tmp_path, "shard_one_byte_changed")
    stats = _prepare([small_data[0]], root, tiny_assets)
    assert stats["shards_skipped"] == 2 and stats["num_samples"] == 8
    with open(os.path.join(root, SHARD), "rb") as a, open(os.path.join(prepared, SHARD), "rb") as b:
        assert a.read() == b.read()
    assert len(open_checked(root)) == 8


def test_an_auto_prepared_copy_says_to_delete_it(prepared, tmp_path, monkeypatch):
    """A damaged copy in $HIGGS_DS_CACHE/prepared (made by auto-prepare, no prepare command to rerun): delete it."""
    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path))
    root = str(tmp_path / "prepared" / "0123456789abcdef")
    shutil.copytree(prepared, root)
    _random_bytes(root)
    with pytest.raises(Exception, match=f"delete {root}: the next training start prepares its source again"):
        open_checked(root)

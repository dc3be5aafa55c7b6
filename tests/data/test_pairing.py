"""Options of utterance-corpus pairing and source identity (higgs_ds/data/sources/config.py): reference duration
bounds, several references per target, and the sha256 content hash that keys prepared data on request."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from higgs_ds.data.sources import open_sources, sources_id
from higgs_ds.data.sources.config import SourceConfig
from higgs_ds.errors import DataError

RATE = 16000


SPEAKER_IDS = {"A": "100", "B": "200"}


def _stem(spk, name):
    """The LibriTTS file name of utterance `name` (a letter and a number) of speaker `spk`: chapter 1, the name
    encoded in the paragraph field."""
    return f"{SPEAKER_IDS[spk]}_1_{ord(name[0]) * 100 + int(name[1:]):06d}_000000"


def _name(path):
    """`name` back from a `_stem` file name (or path)."""
    paragraph = int(os.path.basename(path).split("_")[2])
    return chr(paragraph // 100) + str(paragraph % 100)


def _tree(root, spec):
    """A LibriTTS tree from (speaker, name, seconds): `<root>/<spk id>/1/<stem>.wav` + transcript."""
    for n, (spk, name, seconds) in enumerate(spec):
        d = root / SPEAKER_IDS[spk] / "1"
        d.mkdir(parents=True, exist_ok=True)
        wav = 0.1 * np.random.default_rng(n).standard_normal(int(seconds * RATE))
        sf.write(d / f"{_stem(spk, name)}.wav", wav.astype(np.float32), RATE, subtype="PCM_16")
        (d / f"{_stem(spk, name)}.normalized.txt").write_text(f"utterance {name}.\n")
    return str(root)


def _read(path, **config):
    (src,) = open_sources([path], SourceConfig(**config))
    return list(src.iter_items())


def _refs(items):
    """{target name: [(sample id, reference name), ...]} of the samples, in order."""
    out = {}
    for it in items:
        if not isinstance(it, DataError):
            m = it.sample.messages
            out.setdefault(_name(m[4].content.audio_url), []).append((it.sample_id, _name(m[2].content.audio_url)))
    return out


# speaker A: 0.3, 1.0, 2.0, 1.2 s; speaker B: 0.3, 0.4 s
DURATIONS = [("A", "a1", 0.3), ("A", "a2", 1.0), ("A", "a3", 2.0), ("A", "a4", 1.2), ("B", "b1", 0.3),
             ("B", "b2", 0.4)]


def test_duration_bounds_keep_out_of_range_references_out(tmp_path):
    root = _tree(tmp_path / "c", DURATIONS)
    free = _refs(_read(root, refs_per_target=5))
    assert {r for _, r in free["a1"]} == {"a2", "a3", "a4"}  # without bounds a3 (2.0 s) is a reference too
    bounded = _refs(_read(root, refs_per_target=5, min_ref_seconds=0.8, max_ref_seconds=1.5))
    assert {r for _, r in bounded["a1"]} == {"a2", "a4"} and {r for _, r in bounded["a3"]} == {"a2", "a4"}
    assert [r for _, r in bounded["a2"]] == ["a4"] and [r for _, r in bounded["a4"]] == ["a2"]
    only_long = _refs(_read(root, refs_per_target=5, min_ref_seconds=1.1))
    assert {t: sorted(r for _, r in v) for t, v in only_long.items()} == {
        "a1": ["a3", "a4"], "a2": ["a3", "a4"], "a3": ["a4"], "a4": ["a3"]}


def test_no_reference_in_bounds_names_file_and_line(tmp_path):
    root = _tree(tmp_path / "c", DURATIONS)
    items = _read(root, min_ref_seconds=0.8)
    errors = [e for e in items if isinstance(e, DataError)]
    assert [(e.kind, os.path.basename(e.file), e.line) for e in errors] == [
        ("no_reference", _stem("B", "b1") + ".normalized.txt", 1),
        ("no_reference", _stem("B", "b2") + ".normalized.txt", 1)]
    for e in errors:
        assert str(e).startswith(f"{e.file}:1 (sample {SPEAKER_IDS['B']}_1_") and "--min_ref_seconds 0.8" in str(e)
    assert set(_refs(items)) == {"a1", "a2", "a3", "a4"}  # speaker A still pairs; B's 0.3/0.4 s are too short


def test_k_references_are_distinct_seeded_and_deterministic(tmp_path):
    root = _tree(tmp_path / "c", [("A", f"a{i}", 0.2) for i in range(7)] + [("B", "b1", 0.2), ("B", "b2", 0.2)])
    items = _read(root, refs_per_target=3)
    assert not [e for e in items if isinstance(e, DataError)]  # B has one candidate per target: fewer, no error
    refs = _refs(items)
    for target, pairs in refs.items():
        uid = _stem(target[0].upper(), target)
        names = [r for _, r in pairs]
        assert len(set(names)) == len(names) == (3 if target.startswith("a") else 1)
        assert target not in names and all(r[0] == target[0] for r in names)
        assert [i for i, _ in pairs] == [f"{uid}#{k}" for k in range(1, len(pairs) + 1)]
    assert _refs(_read(root, refs_per_target=3)) == refs  # a second run draws the same references
    single = _refs(_read(root))
    assert {t: v[0][1] for t, v in refs.items()} == {t: v[0][1] for t, v in single.items()}  # K=1's pair first
    assert all(len(v) == 1 and "#" not in v[0][0] for v in single.values())  # K=1: ids as before
    others = [_refs(_read(root, refs_per_target=3, seed=s)) for s in range(1, 4)]
    assert all(o != refs for o in others)  # the seed decides the references


def _rewrite_same_size_and_mtime(path):
    st = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF  # one sample's byte: same size, other content
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def _ids(path, **config):
    return sources_id(open_sources([path], SourceConfig(**config)))


def test_content_hash_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path, small_data):
    root = _tree(tmp_path / "c", DURATIONS)
    chatml = str(tmp_path / "train.jsonl")
    with open(small_data[0], "rb") as f, open(chatml, "wb") as g:
        g.write(f.read())
    for path, changed in ((root, os.path.join(root, "100", "1", _stem("A", "a2") + ".wav")), (chatml, chatml)):
        cheap, hashed = _ids(path), _ids(path, content_hash=True)
        assert cheap != hashed
        _rewrite_same_size_and_mtime(changed)
        assert _ids(path) == cheap  # the default (path, size, mtime) does not see it
        assert _ids(path, content_hash=True) != hashed
        assert _ids(path, content_hash=True) == _ids(path, content_hash=True)  # stable while unchanged


def test_content_hash_keys_the_auto_prepare_cache(tmp_path, small_data, tiny_assets, monkeypatch):
    from higgs_ds.data.prepare import cache_dir_for
    from higgs_ds.data.validate import ValidationConfig

    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path / "cache"))
    chatml = str(tmp_path / "train.jsonl")
    with open(small_data[0], "rb") as f, open(chatml, "wb") as g:
        g.write(f.read())

    def key(content_hash):
        return cache_dir_for(chatml, tiny_assets.model_path, tiny_assets.audio_tokenizer_path, ValidationConfig(),
                             source_config=SourceConfig(content_hash=content_hash))

    before = key(False), key(True)
    _rewrite_same_size_and_mtime(chatml)
    assert key(False) == before[0] and key(True) != before[1]


def test_prepare_with_k_references(tmp_path, tiny_assets):
    """`higgs-ds prepare --refs_per_target 2 --max_ref_seconds 1`: one row per good pair, each with its own id; a
    bad pair (a1 is under --min_audio_seconds) drops only itself, not its target's other pair."""
    from higgs_ds.cli import main
    from higgs_ds.data.prepared import PreparedDataset

    root = _tree(tmp_path / "c", [("A", "a1", 0.3), ("A", "a2", 0.4), ("A", "a3", 0.5), ("A", "a4", 2.0)])
    out = str(tmp_path / "p")
    assert main(["prepare", "--data", root, "--output", out, "--refs_per_target", "2", "--max_ref_seconds", "1",
                 "--seed", "3", "--min_audio_seconds", "0.35", "--on_bad_sample", "skip"]) == 0
    ds = PreparedDataset(out)
    rows = [(ds.row(i, "sample_id"), json.loads(ds.row(i, "sample"))["messages"]) for i in range(len(ds))]
    pairs = {i: tuple(_name(m[k]["content"]["audio_url"]) for k in (4, 2)) for i, m in rows}
    (a4,) = [r for t, r in pairs.values() if t == "a4"]  # seed 3 drew a1 and one other for a4
    assert sorted(pairs.values()) == [("a2", "a3"), ("a3", "a2"), ("a4", a4)] and a4 in ("a2", "a3")  # a4: no ref
    assert all(i.rsplit("#", 1)[1] in ("1", "2") for i in pairs)
    assert len(ds) == ds.index["report"]["samples_ok"] == 3 and ds.index["report"]["samples_read"] == 8
    with pytest.raises(SystemExit):
        main(["prepare", "--data", root, "--output", out, "--refs_per_target", "0"])

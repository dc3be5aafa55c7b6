"""The pair check of `higgs-ds prepare` (higgs_ds/data/pair_check.py) on real espeak-ng voices and the built-in
speaker encoder: scrambled speaker labels are caught, `--min_pair_sim` drops exactly the pairs whose reference is
another voice (known here: each file's voice is recorded when it is written), and each clip is embedded once."""
import hashlib
import json
import os
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from higgs_ds.data.pair_check import PairCheckConfig, check_pairs, speaker_skew
from higgs_ds.data.sources import open_sources
from higgs_ds.data.sources.config import SourceConfig
from higgs_ds.errors import DataError

from .espeak import SENTENCES, espeak_speech

THRESHOLD = 0.76  # between different voices (<= 0.72) and the same voice (>= 0.8) of tests/data/espeak.py


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return espeak_speech(tmp_path_factory.mktemp("espeak"))


@pytest.fixture(scope="module")
def embed():
    """The built-in encoder's `embed(path)`, counting its calls per path (the encoder itself runs once per content:
    the trees of these tests hold copies of the same clips)."""
    from higgs_ds.evaluation.speaker import file_embedder

    inner, calls, by_content = file_embedder(), Counter(), {}

    def counted(path):
        calls[path] += 1
        with open(path, "rb") as f:
            key = hashlib.sha256(f.read()).hexdigest()
        if key not in by_content:
            by_content[key] = inner(path)
        return by_content[key]

    counted.calls = calls
    return counted


def _tree(root, speech, label):
    """A LibriTTS tree where clip (voice, sentence) is filed under speaker `label(voice, sentence)`; returns
    {path: voice}."""
    voice_of = {}
    for (v, s), (wav, rate) in speech.items():
        spk = label(v, s)
        d = root / spk / "1"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{spk}_1_{10 * v + s:06d}_000000.wav"
        sf.write(path, wav, rate)
        (d / f"{path.stem}.normalized.txt").write_text(SENTENCES[s])
        voice_of[str(path)] = v
    return str(root), voice_of


def _items(root, **config):
    (src,) = open_sources([root], SourceConfig(**config))
    return list(src.iter_items())


def _voices(it, voice_of):
    m = it.sample.messages
    return voice_of[m[2].content.audio_url], voice_of[m[4].content.audio_url]


def test_scrambled_speaker_labels_are_caught(tmp_path, speech, embed):
    clean_root, _ = _tree(tmp_path / "clean", speech, lambda v, s: f"{v + 1}00")
    scrambled_root, voice_of = _tree(tmp_path / "scrambled", speech, lambda v, s: f"{(v + s) % 3 + 1}00")
    config = PairCheckConfig(check_pairs=True)
    _, clean = check_pairs(_items(clean_root), embed, config)
    assert clean["suspect_speakers"] == [] and clean["suspect_pairs"] == [] and clean["warnings"] == []
    items = _items(scrambled_root)
    _, scrambled = check_pairs(items, embed, config)
    assert scrambled["suspect_speakers"] == ["100", "200", "300"]
    assert any("speaker labels are likely wrong" in w for w in scrambled["warnings"])
    crossed = {it.where for it in items if len(set(_voices(it, voice_of))) == 2}
    assert crossed and {p["sample"] for p in scrambled["suspect_pairs"]} == crossed
    assert scrambled["pairs_dropped"] == 0  # flagged, not dropped, without --min_pair_sim


def test_one_label_over_several_voices_splits_into_clusters(tmp_path, speech, embed):
    """Every clip under one speaker (what a directory level taken for the speaker gives): no other speaker to be
    closer to, so the split into clusters must flag it."""
    root, _ = _tree(tmp_path / "one", speech, lambda v, s: "100")
    _, report = check_pairs(_items(root), embed, PairCheckConfig(check_pairs=True))
    assert report["speakers"]["100"]["misassigned"] == 0 and report["suspect_speakers"] == ["100"]
    assert report["speakers"]["100"]["split_sim"] < report["threshold"]


def test_min_pair_sim_drops_exactly_the_mismatched_pairs_and_embeds_each_clip_once(tmp_path, speech, embed):
    mislabelled = {(2, 0): "100", (1, 1): "300"}
    root, voice_of = _tree(tmp_path / "c", speech, lambda v, s: mislabelled.get((v, s), f"{v + 1}00"))
    items = _items(root, refs_per_target=3)
    embed.calls.clear()
    kept, report = check_pairs(items, embed, PairCheckConfig(min_pair_sim=THRESHOLD))
    mismatched = {it.where for it in items if len(set(_voices(it, voice_of))) == 2}
    dropped = {it.where for it in items} - {it.where for it in kept}
    assert mismatched and dropped == mismatched and report["pairs_dropped"] == len(mismatched)
    assert all(len(set(_voices(it, voice_of))) == 1 for it in kept)
    assert set(embed.calls) == set(voice_of) and set(embed.calls.values()) == {1}  # 54 pairs, 18 clips
    assert report["pairs_scored"] == len(items) > len(voice_of)
    # one clip of another voice under "100" and under "300": each sits closer to the other speaker's centroid
    assert {s: v["misassigned"] for s, v in report["speakers"].items()} == {"100": 1, "200": 0, "300": 1}


def test_speaker_skew_names_the_speaker_and_the_cause(tmp_path, speech):
    root, _ = _tree(tmp_path / "c", speech, lambda v, s: "100" if v < 2 else "300")
    warning = speaker_skew(_items(root))
    assert "'100' holds 12 of 18 samples" in warning and "directory level" in warning
    balanced, _ = _tree(tmp_path / "b", speech, lambda v, s: f"{v + 1}00")
    assert speaker_skew(_items(balanced)) is None


def test_prepare_min_pair_sim_writes_the_report_and_reuses_it(tmp_path, speech, embed, tiny_assets, monkeypatch):
    """`higgs-ds prepare --min_pair_sim --quality`: the prepared rows are the pairs that pass; the report is in
    DIR/pair_check.json, the quality columns in DIR/quality.arrow; a rerun of the same command embeds nothing; a
    --filter on duration keeps exactly the samples whose target is short enough."""
    import higgs_ds.cli as cli
    import higgs_ds.commands.prepare as prepare_command
    from higgs_ds.data.filters import filter_prepared, read_quality
    from higgs_ds.data.prepared import PreparedDataset

    few = {k: v for k, v in speech.items() if k[0] < 2 and k[1] < 3}
    root, voice_of = _tree(tmp_path / "c", few, lambda v, s: "100" if (v, s) == (1, 0) else f"{v + 1}00")
    monkeypatch.setattr(prepare_command, "_speaker_embedder", lambda: embed)
    out = str(tmp_path / "p")
    embed.calls.clear()
    argv = ["prepare", "--data", root, "--output", out, "--min_pair_sim", str(THRESHOLD), "--on_bad_sample", "skip",
            "--quality"]
    assert cli.main(argv) == 0
    with open(os.path.join(out, "pair_check.json")) as f:
        report = json.load(f)
    items = [it for it in _items(root) if not isinstance(it, DataError)]
    mismatched = {it.where for it in items if len(set(_voices(it, voice_of))) == 2}
    assert mismatched and set(report["dropped"]) == mismatched and report["pairs_dropped"] == len(mismatched)
    ds = PreparedDataset(out)
    assert sorted(ds.row(i, "sample_id") for i in range(len(ds))) == sorted(
        it.sample_id for it in items if it.where not in mismatched)
    assert set(embed.calls) == set(voice_of) and set(embed.calls.values()) == {1}
    embed.calls.clear()
    assert cli.main(argv) == 0 and not embed.calls
    quality = read_quality(out)
    kept = {it.sample_id: it for it in items if it.where not in mismatched}
    assert {k[1] for k in quality} == set(kept)
    assert all(q["pair_sim"] == report["pair_sims"][kept[k[1]].where] for k, q in quality.items())
    seconds = {i: sf.info(it.sample.messages[4].content.audio_url).duration for i, it in kept.items()}
    cut = float(np.mean(sorted(seconds.values())[:2]))  # between the two shortest targets
    for op, passes in (("<=", lambda d: d <= cut), (">", lambda d: d > cut)):  # each side of the cut
        view, dropped = filter_prepared(PreparedDataset(out), f"duration{op}{cut}")
        assert sorted(view.row(i, "sample_id") for i in range(len(view))) == sorted(
            i for i, d in seconds.items() if passes(d))
        assert all(view.num_tokens(i) == view.row(i, "num_tokens") for i in range(len(view)))
        assert dropped == {f"duration{op}{cut:g}": len(kept) - len(view)} and 0 < len(view) < len(kept)


def test_two_ranks_split_the_embedding_and_keep_the_same_pairs(tmp_path, speech, embed):
    """Under a launcher each rank embeds half of the distinct clips; both ranks then drop the same pairs."""
    import threading

    from higgs_ds.data.prepare_checks import Scorers, verify_pairs

    few = {k: v for k, v in speech.items() if k[1] < 3}
    root, voice_of = _tree(tmp_path / "c", few, lambda v, s: "100" if (v, s) == (1, 0) else f"{v + 1}00")
    (src,) = open_sources([root], SourceConfig())
    items, results = list(src.iter_items()), {}
    embed.calls.clear()

    def run(rank):
        results[rank] = verify_pairs(items, [src], str(tmp_path / "out"), PairCheckConfig(min_pair_sim=THRESHOLD),
                                     Scorers(embed=lambda: embed), rank, 2, poll_s=0.05)

    other = threading.Thread(target=run, args=(1,))
    other.start()
    run(0)
    other.join()
    assert set(embed.calls) == set(voice_of) and set(embed.calls.values()) == {1}
    (kept0, report0, write0), (kept1, report1, write1) = results[0], results[1]
    mismatched = {it.where for it in items if not isinstance(it, DataError) and len(set(_voices(it, voice_of))) == 2}
    assert mismatched and set(report0["dropped"]) == set(report1["dropped"]) == mismatched
    assert [it.where for it in kept0] == [it.where for it in kept1] and write0 and not write1

"""Validation: every broken sample of a corpus is reported with file:line and kind; skip keeps only the good ones."""
import json

import numpy as np
import pytest
import soundfile as sf

from higgs_ds.data.chatml import read_chatml
from higgs_ds.data.samples import voice_cloning_sample
from higgs_ds.data.synthetic import speech_like
from higgs_ds.data.validate import ValidationConfig, validate_data
from higgs_ds.errors import DataError


def _wav(path, seconds=0.6, sr=24000, channels=1):
    wav = speech_like(np.random.default_rng(0), seconds, sr=sr)
    sf.write(str(path), np.stack([wav] * channels, 1) if channels > 1 else wav, sr, subtype="PCM_16")
    return path.name


@pytest.fixture(scope="module")
def text_tokenizer(tiny_assets):
    from higgs_ds.models.loading import load_text_tokenizer

    return load_text_tokenizer(tiny_assets.model_path)


@pytest.fixture
def corpus(tmp_path):
    """(path, {line: expected kind or None for good}) of a JSONL mixing good and broken samples."""
    ref, tgt = _wav(tmp_path / "ref.wav"), _wav(tmp_path / "tgt.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 24000)
    rate16, stereo = _wav(tmp_path / "r16.wav", sr=16000), _wav(tmp_path / "st.wav", channels=2)
    long = _wav(tmp_path / "long.wav", seconds=12.0)
    good = lambda t=tgt, r=ref, **kw: {**voice_cloning_sample(r, "Hello there.", t, "A target sentence."), **kw}  # noqa: E731
    four = voice_cloning_sample(ref, "r", tgt, "t")
    rows = [
        (good(id="ok"), None),
        (good(t="missing.wav"), "missing_audio"),
        (good(t="corrupt.wav"), "corrupt_audio"),
        (good(t="empty.wav"), "empty_audio"),
        (good(t=rate16, id="rate16"), None),
        (good(t=stereo, id="stereo"), None),
        ('{"messages": [', "json"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "role"),
        ({"messages": four["messages"][:4], "start_index": 3}, "no_target_audio"),
        (good(start_index=9), "start_index"),
        (good(start_index=1), "start_index"),
        ({**good(), "messages": [*good()["messages"][:3], {"role": "user", "content": "  "}, good()["messages"][4]]},
         "empty_text"),
        (good(t=long), "too_long"),
        (good(start_index="4"), "type"),
        ({**good(), "messages": [{"role": "system", "content": 5}]}, "type"),
        (b'{"id": "\xff\xfe"}', "encoding"),
        (good(t=_wav(tmp_path / "short.wav", seconds=0.02)), "audio_duration"),
    ]
    path = tmp_path / "corpus.jsonl"
    with open(path, "wb") as f:
        for row, _ in rows:
            f.write(row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode())
            f.write(b"\n")
    return str(path), {i + 1: kind for i, (_, kind) in enumerate(rows)}


LIMITS = ValidationConfig(min_audio_seconds=0.1, max_audio_seconds=20.0, max_tokens=300)


def test_fail_mode_lists_every_problem_with_file_line_and_kind(corpus, text_tokenizer):
    path, expected = corpus
    with pytest.raises(DataError) as err:
        validate_data(path, text_tokenizer, LIMITS, on_bad_sample="fail")
    msg = str(err.value)
    for line, kind in expected.items():
        if kind:
            assert f"[{kind}] {path}:{line}" in msg, (line, kind, msg)
    assert "--on_bad_sample skip" in msg


def test_skip_mode_keeps_only_good_samples_and_counts(corpus, text_tokenizer, caplog):
    path, expected = corpus
    report = validate_data(path, text_tokenizer, LIMITS, on_bad_sample="skip")
    assert [s.line for s in report.samples] == [line for line, kind in expected.items() if kind is None]
    assert {(p.line, p.kind) for p in report.problems} == {(ln, k) for ln, k in expected.items() if k}
    assert report.num_read == len(expected)
    assert "skipping 14 bad sample(s) of 17" in caplog.text
    d = report.to_dict()
    assert d["notes"] == {"resampled_16000_to_24000": 1, "stereo_downmixed": 1}
    assert d["samples_ok"] == 3 and d["problems_by_kind"]["start_index"] == 2
    assert 0 < d["token_length"]["p50"] <= d["token_length"]["max"] <= 300
    assert "problems by kind" in report.summary()


def test_seed_style_sample_says_how_to_fix(corpus):
    path, _ = corpus
    report = validate_data(path, None, LIMITS, on_bad_sample="skip")
    (p,) = [p for p in report.problems if p.kind == "no_target_audio"]
    assert "start_index 4" in p.message and "append the target audio" in p.message and p.line == 9


def test_read_chatml_still_raises_at_first_problem(corpus):
    path, _ = corpus
    with pytest.raises(DataError, match=f"{path}:7: malformed JSON"):
        list(read_chatml(path))  # lines 2-6 are schema-valid: audio is not checked by the reader


def test_good_corpus_reports_statistics(small_data, text_tokenizer):
    report = validate_data(small_data[0], text_tokenizer)
    d = report.to_dict()
    assert d["samples_ok"] == 8 and d["samples_bad"] == 0 and d["speakers"] == 4 and d["audio_files"] == 16
    assert 16 * 0.5 / 3600 <= d["audio_hours"] <= 16 * 1.2 / 3600 + 1e-4

"""`higgs-ds score` on real speech synthesised with espeak-ng (tests/evaluation/espeak.py): the built-in SIM separates voices,
DNSMOS separates speech from noise, the WavLM/Whisper backends run end to end on tiny random local models, and
the output file, confidence intervals and error messages are what docs/EVAL.md says."""
import itertools
import json
import math

import numpy as np
import pytest

from higgs_ds.data.audio import load_waveform
from tests.evaluation import espeak


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """{(voice, sentence index): 16 kHz waveform}: 4 voices x 2 sentences, and their wav paths."""
    paths = espeak.corpus(str(tmp_path_factory.mktemp("espeak")), n_sentences=2)
    return {k: load_waveform(p, 16000) for k, p in paths.items()}, paths


@pytest.fixture(scope="module")
def scoring_dirs(tmp_path_factory):
    from higgs_ds.assets.scoring_models import save_random_wavlm, save_random_whisper

    root = tmp_path_factory.mktemp("scoring_models")
    return save_random_wavlm(str(root / "wavlm")), save_random_whisper(str(root / "whisper"))


@pytest.mark.slow  # real speaker / DNSMOS models on real speech
def test_same_voice_pairs_score_higher_sim_than_different_voices(speech):
    from higgs_ds.evaluation.speaker import ResemblyzerEmbedder, similarity

    wavs, _ = speech
    enc = ResemblyzerEmbedder()
    emb = {k: enc.embed(w) for k, w in wavs.items()}
    pairs = list(itertools.combinations(sorted(wavs), 2))
    naive = {(a, b): float(np.dot(emb[a], emb[b]) / np.linalg.norm(emb[a]) / np.linalg.norm(emb[b])) for a, b in pairs}
    same = [s for (a, b), s in naive.items() if a[0] == b[0]]
    diff = [s for (a, b), s in naive.items() if a[0] != b[0]]
    assert len(same) == 4 and len(diff) == 24
    assert np.mean(same) - np.mean(diff) >= 0.1, (np.mean(same), np.mean(diff))
    a, b = pairs[0]  # the scorer's SIM is the plain cosine of the embeddings
    assert similarity(enc, wavs[a], wavs[b]) == pytest.approx(naive[(a, b)], abs=1e-6)
    assert similarity(enc, wavs[a], wavs[a]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # real speaker / DNSMOS models on real speech
def test_dnsmos_rates_clean_speech_above_white_noise(speech):
    from higgs_ds.evaluation.dnsmos import KEYS, DnsmosScorer

    wavs, _ = speech
    clips = [wavs[(v, 0)] for v in ("us_m3", "gb_f3", "sc_m7")]
    rng = np.random.default_rng(0)
    noise = [np.clip(rng.normal(0, 0.1, len(c)), -1, 1).astype(np.float32) for c in clips]
    d = DnsmosScorer()
    s, n = [d.score(c) for c in clips], [d.score(c) for c in noise]
    assert all(set(r) == set(KEYS) for r in s + n)
    assert np.mean([r["dnsmos_ovrl"] for r in s]) - np.mean([r["dnsmos_ovrl"] for r in n]) >= 1.0


def test_mean_ci_matches_the_t_interval():
    from higgs_ds.evaluation.stats import mean_ci

    x = [0.5, 0.7, 0.9, 0.6]
    m, sd = sum(x) / 4, math.sqrt(sum((v - sum(x) / 4) ** 2 for v in x) / 3)
    got = mean_ci(x + [None, float("nan")])  # missing values are left out
    assert got["n"] == 4 and got["mean"] == pytest.approx(m)
    assert got["ci95"] == pytest.approx(3.182446305284263 * sd / 2)  # t(0.975, 3)
    assert mean_ci([1.0])["ci95"] is None and mean_ci([])["mean"] is None


def test_error_rates_normalise_case_and_punctuation():
    from higgs_ds.evaluation.asr import error_rates, make_normalizer

    norm = make_normalizer()
    r = error_rates("the cat sat on", "The cat, sat!", norm)
    assert r["wer"] == pytest.approx(1 / 3)  # one insertion over three reference words
    assert r["cer"] == pytest.approx(3 / 11)  # " on" over "the cat sat"
    assert error_rates("Hello world.", "hello, WORLD", norm) == {"wer": 0.0, "cer": 0.0, "error_rate": 0.0,
                                                                 "error_rate_name": "wer"}


def _requests(tmp_path, paths, pairs):
    f = tmp_path / "req.jsonl"
    with open(f, "w") as fh:
        for (a, b) in pairs:
            fh.write(json.dumps({"audio": paths[a], "ref_audio": paths[b], "text": espeak.SENTENCES[a[1]]}) + "\n")
    return str(f)


@pytest.mark.slow  # real speaker / DNSMOS models on real speech
def test_score_cli_with_wavlm_and_whisper_dirs(speech, scoring_dirs, tmp_path, capsys):
    from higgs_ds.cli import main
    from higgs_ds.evaluation.asr import WhisperASR, error_rates
    from higgs_ds.evaluation.speaker import WavLMEmbedder, cosine
    from higgs_ds.evaluation.stats import mean_ci

    wavs, paths = speech
    wavlm, whisper = scoring_dirs
    pairs = [(("us_m3", 0), ("us_m3", 1)), (("gb_f3", 1), ("sc_m7", 0))]
    out = tmp_path / "scores.json"
    assert main(["score", "--requests", _requests(tmp_path, paths, pairs), "--output", str(out),
                 "--sim_model", wavlm, "--asr_model", whisper]) == 0
    result = json.loads(out.read_text())
    assert result["backends"] == {"sim": "wavlm", "dnsmos": "dnsmos", "asr": "whisper"}
    rows = result["rows"]
    assert [(r["audio"], r["ref_audio"]) for r in rows] == [(paths[a], paths[b]) for a, b in pairs]  # in order
    emb, asr = WavLMEmbedder.load(wavlm), WhisperASR.load(whisper)
    for r, (a, b) in zip(rows, pairs):  # each row: the backends run directly on the same clips
        assert r["sim"] == pytest.approx(cosine(emb.embed(wavs[a]), emb.embed(wavs[b])), abs=1e-5)
        assert r["transcript"] == asr.transcribe(wavs[a])[0]
        expected = error_rates(r["transcript"], espeak.SENTENCES[a[1]], asr.normalizer("en"))
        assert r["wer"] == pytest.approx(expected["wer"])
        assert 1 <= r["dnsmos_ovrl"] <= 5
    for k in ("sim", "wer", "cer", "dnsmos_ovrl", "dnsmos_p808"):
        assert result["mean"][k] == pytest.approx(mean_ci([r[k] for r in rows]))
    table = capsys.readouterr().out
    assert "wer" in table and "not measured" not in table


@pytest.mark.slow  # real speaker / DNSMOS models on real speech
def test_score_without_asr_reports_no_wer(speech, tmp_path, capsys):
    from higgs_ds.commands.score import main

    _, paths = speech
    out = tmp_path / "s.json"
    assert main(["--requests", _requests(tmp_path, paths, [(("us_m3", 0), ("us_m3", 1))]), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "wer" not in result["mean"] and "wer" not in result["rows"][0] and result["backends"]["asr"] is None
    assert 0.5 < result["rows"][0]["sim"] <= 1.0
    assert "wer/cer: not measured (no --asr_model DIR given)" in capsys.readouterr().out


@pytest.mark.parametrize("line, message", [
    ("{not json", "req.jsonl:2: not valid JSON"),
    ('{"audio": "a.wav", "text": "x"}', "req.jsonl:2: missing or non-string field(s): ref_audio"),
    ('{"audio": "nope.wav", "ref_audio": "nope.wav", "text": "x"}', "req.jsonl:2: audio file not found"),
])
def test_bad_requests_name_file_and_line(speech, tmp_path, capsys, line, message):
    from higgs_ds.commands.score import main

    _, paths = speech
    f = _requests(tmp_path, paths, [(("us_m3", 0), ("us_m3", 1))])
    with open(f, "a") as fh:
        fh.write(line + "\n")
    assert main(["--requests", f]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_model_dirs_must_be_local(tmp_path, capsys):
    from higgs_ds.commands.score import main

    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"audio": "a.wav", "ref_audio": "b.wav", "text": "t"}) + "\n")
    assert main(["--requests", str(f), "--asr_model", "openai/whisper-large-v3"]) == 2
    assert "--asr_model openai/whisper-large-v3: not a local model dir" in capsys.readouterr().err

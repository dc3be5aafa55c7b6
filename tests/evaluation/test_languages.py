"""Language-aware scoring: language codes, the per-language normalisers on real sentences (error rates compared
with a naive edit distance over hand-normalised text), and Whisper transcribing each clip in its language (a tiny
random multilingual Whisper built locally: the decoded sequence must carry the clip's language token)."""
import unicodedata

import numpy as np
import pytest

from higgs_ds.evaluation.asr import error_rates, make_normalizer
from higgs_ds.languages import base_language, check_language, error_rate_name


def edits(a, b):
    """Naive Levenshtein distance between two sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def rates(hyp, ref, language):
    return error_rates(hyp, ref, make_normalizer(None, language), error_rate_name(language))


@pytest.mark.parametrize("tag, canonical, base", [("vi", "vi", "vi"), ("VIE", "vie", "vi"), ("cmn", "cmn", "zh"),
                                                  ("zh-hant-tw", "zh-Hant-TW", "zh"), ("es-419", "es-419", "es"),
                                                  ("yue", "yue", "yue"), ("AR-eg", "ar-EG", "ar")])
def test_language_codes(tag, canonical, base):
    assert check_language(tag) == canonical and base_language(canonical) == base


@pytest.mark.parametrize("bad", ["english", "v", "zh_TW", "en-", "", 3, "zh-Hant-TW-x"])
def test_bad_language_codes_are_refused(bad):
    with pytest.raises(ValueError, match="is not a language code"):
        check_language(bad)


def test_chinese_is_cer_on_simplified_characters_without_punctuation():
    ref = "我們今天去北京，好嗎？"  # traditional characters, full-width punctuation
    simplified = "我们今天去北京好吗"
    assert rates("我们今天去北京好吗。", ref, "zh-Hant") == {"wer": None, "cer": 0.0, "error_rate": 0.0,
                                                         "error_rate_name": "cer"}
    got = rates("我们 明天 去北京 好吗", ref, "zh")  # spaces are not characters
    assert got["cer"] == pytest.approx(edits(simplified, "我们明天去北京好吗") / len(simplified))
    # numerals are kept as written (seed-tts-eval): "3" against "三" is one substitution
    assert rates("我有3个苹果", "我有三个苹果。", "zh")["cer"] == pytest.approx(edits("我有三个苹果", "我有3个苹果") / 6)


def test_vietnamese_keeps_its_diacritics():
    ref = "Tôi yêu Việt Nam, và tôi sống ở Hà Nội."
    words = "tôi yêu việt nam và tôi sống ở hà nội".split()
    assert rates("tôi yêu việt nam và tôi sống ở hà nội", ref, "vi")["wer"] == 0.0
    decomposed = unicodedata.normalize("NFD", ref)  # the same text with combining accents
    assert decomposed != ref and rates(decomposed, ref, "vi")["wer"] == 0.0
    bare = "toi yeu viet nam va toi song o ha noi"  # diacritics are meaning in Vietnamese: all but "nam" differ
    got = rates(bare, ref, "vi")
    assert got["error_rate_name"] == "wer" and got["wer"] == pytest.approx(edits(words, bare.split()) / len(words))


def test_arabic_ignores_harakat_and_keeps_words_whole():
    ref = "ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ."
    assert rates("ذهب الولد إلى المدرسة", ref, "ar")["wer"] == 0.0
    words, hyp = "ذهب الولد إلى المدرسة".split(), "ذهب الولد إلى البيت"
    assert rates(hyp, ref, "ar")["wer"] == pytest.approx(edits(words, hyp.split()) / len(words))


def test_hindi_vowel_signs_do_not_split_words():
    ref, hyp = "नमस्ते दुनिया।", "नमस्ते भारत"
    assert rates("नमस्ते दुनिया", ref, "hi")["wer"] == 0.0
    assert rates(hyp, ref, "hi")["wer"] == pytest.approx(edits(["नमस्ते", "दुनिया"], hyp.split()) / 2)


def test_japanese_is_cer_without_spaces():
    ref = "今日は良い天気です。"
    assert rates("今日は 良い天気です", ref, "ja") == {"wer": None, "cer": 0.0, "error_rate": 0.0,
                                                 "error_rate_name": "cer"}
    assert rates("今日は悪い天気です", ref, "ja")["cer"] == pytest.approx(1 / len("今日は良い天気です"))


def test_english_keeps_whisper_english_normaliser():
    assert rates("Mr. Smith has 2 dogs.", "mister smith has two dogs", "en")["wer"] == 0.0


LANGS = ("en", "vi", "zh", "ar", "ja")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    from higgs_ds.assets.scoring_models import TINY_WHISPER, save_random_whisper
    from higgs_ds.evaluation.asr import WhisperASR

    shape = dict(TINY_WHISPER, max_target_positions=16)  # 12 new tokens: random weights never stop early
    path = save_random_whisper(str(tmp_path_factory.mktemp("whisper_ml")), languages=LANGS, **shape)
    return WhisperASR.load(path)


def _recording(asr):
    """Wrap `asr.model.generate` so that the decoded sequences are kept."""
    seen, real = [], asr.model.generate

    def generate(*a, **k):
        out = real(*a, **k)
        seen.append(out[0].tolist())
        return out

    asr.model.generate = generate
    return seen


def _clip(seed):
    return np.random.default_rng(seed).normal(0, 0.1, 16000).astype(np.float32)


@pytest.mark.parametrize("language", ["vi", "zh-Hant-TW", "ara"])
def test_whisper_transcribes_in_the_clips_language(multilingual, language):
    seen = _recording(multilingual)
    row = multilingual.score(_clip(0), "Xin chào", language)
    code = base_language(language)
    assert row["asr_language"] == code and row["language_source"] == "given"
    start = multilingual.model.generation_config.decoder_start_token_id
    assert seen[-1][:2] == [start, multilingual.lang_to_id[f"<|{code}|>"]]  # the forced language token
    assert row["error_rate_name"] == error_rate_name(language)


def _naive_detect(asr, wav):
    """The language token Whisper's first step ranks highest after start-of-transcript, computed by hand."""
    import torch

    feats = asr.processor(wav, sampling_rate=16000, return_tensors="pt").input_features
    start = asr.model.generation_config.decoder_start_token_id
    with torch.no_grad():
        logits = asr.model(input_features=feats, decoder_input_ids=torch.tensor([[start]])).logits[0, -1]
    ids = {i: t for t, i in asr.lang_to_id.items()}
    return ids[max(ids, key=lambda i: float(logits[i]))][2:-2]


@pytest.mark.parametrize("language", [None, "fr"])  # none given; a language the checkpoint has no token for
def test_whisper_detects_and_reports_the_language(multilingual, language):
    seen = _recording(multilingual)
    for seed in range(3):
        wav = _clip(seed)
        row = multilingual.score(wav, "bonjour", language)
        expected = _naive_detect(multilingual, wav)
        assert row["asr_language"] == expected and row["language_source"] == "detected"
        assert seen[-1][1] == multilingual.lang_to_id[f"<|{expected}|>"]


def test_english_only_whisper_is_not_forced(tmp_path):
    from higgs_ds.assets.scoring_models import save_random_whisper
    from higgs_ds.evaluation.asr import WhisperASR

    asr = WhisperASR.load(save_random_whisper(str(tmp_path / "en")))
    row = asr.score(_clip(1), "hello", "vi")
    assert (row["asr_language"], row["language_source"]) == ("en", "model")
    assert row["error_rate_name"] == "wer"  # scored as the sample's language (Vietnamese) all the same


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, multilingual):
    """A mixed-language request set of espeak-ng speech (Vietnamese, Mandarin, Arabic, English voices), scored
    with the tiny multilingual Whisper; the last clip names no language (Whisper detects it)."""
    import json

    from higgs_ds.evaluation.scorer import Scorer
    from higgs_ds.inference.requests import read_requests
    from tests.evaluation import espeak

    root = tmp_path_factory.mktemp("mixed")
    clips = espeak.language_corpus(str(root))
    with open(root / "req.jsonl", "w") as f:
        for i, (lang, voice, text, path) in enumerate(clips):
            req = {"audio": path, "ref_audio": clips[i - 1][3], "text": text, "speaker": f"{voice}-{i % 2}"}
            f.write(json.dumps({**req, **({"language": lang} if i < len(clips) - 1 else {})}) + "\n")
    scorer = Scorer(asr_model=multilingual.model.name_or_path, dnsmos=False)
    return clips, scorer.score_requests(read_requests(str(root / "req.jsonl")))


def _naive_groups(rows, group):
    """{group: {metric: plain mean of the rows that have it}}."""
    out = {}
    for r in rows:
        out.setdefault(group(r), []).append(r)
    return {g: {k: float(np.mean([r[k] for r in rs if r.get(k) is not None]))
                for k in ("sim", "wer", "cer", "error_rate") if any(r.get(k) is not None for r in rs)}
            for g, rs in out.items()}


def test_score_breaks_every_mean_down_by_language_and_speaker(mixed):
    from higgs_ds.evaluation.scorer import format_table

    clips, result = mixed
    rows = result["rows"]
    assert [r["asr_language"] for r in rows[:-1]] == [c[0] for c in clips[:-1]]
    assert rows[-1]["language_source"] == "detected" and "language" not in rows[-1]
    langs = [r.get("language") or r["asr_language"] for r in rows]
    for key, group in (("by_language", lambda r: r.get("language") or r["asr_language"]),
                       ("by_speaker", lambda r: r["speaker"])):
        naive = _naive_groups(rows, group)
        assert set(result[key]) == set(naive)
        for g, means in naive.items():
            assert {k: result[key][g][k]["mean"] for k in means} == pytest.approx(means)
    assert result["by_language"]["zh"]["error_rate_name"] == "cer" and "wer" not in result["by_language"]["zh"]
    assert result["by_language"]["vi"]["error_rate_name"] == "wer"
    assert result["by_language"]["vi"]["n_rows"] == langs.count("vi")
    assert result["mean"]["error_rate_name"] == ("wer+cer" if "zh" in langs else "wer")
    table = format_table(result)
    zh_line = next(line for line in table.splitlines() if line.startswith("language zh"))
    assert " cer " in zh_line  # the error rate is named in the table


def test_generation_eval_and_card_report_languages(mixed, tmp_path):
    from higgs_ds.evaluation.compare import format_generation_table, summarize_systems
    from higgs_ds.evaluation.in_training import gen_metrics
    from higgs_ds.inference.model_card import quality_facts, render

    _, result = mixed
    rows = [dict(r, no_audio=False) for r in result["rows"]]
    naive = _naive_groups(rows, lambda r: r.get("language") or r["asr_language"])
    metrics = gen_metrics(rows)
    for lang, means in naive.items():
        assert metrics[f"language/{lang}/error_rate"] == pytest.approx(means["error_rate"])
        assert metrics[f"language/{lang}/sim"] == pytest.approx(means["sim"])
    summary = summarize_systems({"adapter": rows})
    by_language = summary["adapter"]["by_language"]  # score's groups, plus the generation eval's own measures
    assert {g: {k: m[k] for k in result["by_language"][g]} for g, m in by_language.items()} == result["by_language"]
    table = format_generation_table(summary, asr=True)
    assert all(f"adapter language {lang}" in table for lang in naive)
    q = quality_facts([{"step": 0, "baseline": True}, {"step": 5, "baseline": False, **metrics}])
    assert q["step"] == 5 and q["groups"]["language zh"]["error_rate"] == round(naive["zh"]["error_rate"], 4)
    report = {"samples_ok": 4, "languages": {"(none)": 1, "vi": 2, "zh": 1}}
    card = render({"format": "boson", "base_model": {"path": "/m"}, "data": {"train": report}, "train_data": "t",
                   "val_data": None, "training": {}, "world_size": 1, "steps": 5, "lora": {}, "final_train": {},
                   "final_val": {}, "quality": q})
    assert "## Generation quality" in card and f"| language zh | {q['groups']['language zh']['sim']} |" in card
    assert "samples per language: (none) 1, vi 2, zh 1" in card


def test_request_language_is_checked(tmp_path, capsys):
    import json

    from higgs_ds.commands.score import main
    from higgs_ds.inference.requests import read_requests

    (tmp_path / "a.wav").write_bytes(b"")  # read_requests only checks that the files exist
    f = tmp_path / "r.jsonl"
    req = {"audio": "a.wav", "ref_audio": "a.wav", "text": "t"}
    f.write_text(json.dumps({**req, "language": "ZH-hant"}) + "\n")
    assert read_requests(str(f))[0]["language"] == "zh-Hant"
    with open(f, "a") as fh:
        fh.write(json.dumps({**req, "language": "english"}) + "\n")
    assert main(["--requests", str(f)]) == 2
    err = capsys.readouterr().err
    assert "r.jsonl:2: language 'english' is not a language code" in err and "Traceback" not in err

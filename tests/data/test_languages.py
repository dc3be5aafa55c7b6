"""The optional `language` of a ChatML sample: checked (file:line on a bad tag), counted per language in the
validation report, stored in a prepared dir (its `language` column and sample JSON), and set for a whole source
by `higgs-ds prepare --language`."""
import collections
import json
import os

import pytest

from higgs_ds.data.validate import validate_data
from higgs_ds.errors import DataError

TAGS = ["vi", "ZH-hant", None, "vi", "en", None, "vie", "ar"]
CANONICAL = ["vi", "zh-Hant", None, "vi", "en", None, "vie", "ar"]


def _tagged(small_data, path, tags, n=None):
    """small_data's train.jsonl (audio paths made absolute) with `language` set per sample (None: no field)."""
    base = os.path.dirname(small_data[0])
    rows = [json.loads(line) for line in open(small_data[0])][:n]
    with open(path, "w") as f:
        for row, tag in zip(rows, tags):
            for m in row["messages"]:
                if isinstance(m["content"], dict):
                    m["content"]["audio_url"] = os.path.join(base, m["content"]["audio_url"])
            if tag is not None:
                row["language"] = tag
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def _counts(tags):
    """Naive per-language counts, as the report should give them."""
    return dict(sorted(collections.Counter(t or "(none)" for t in tags).items()))


def test_languages_are_read_and_counted(small_data, tmp_path):
    report = validate_data(_tagged(small_data, tmp_path / "d.jsonl", TAGS))
    assert [s.language for s in report.samples] == CANONICAL
    assert report.to_dict()["languages"] == _counts(CANONICAL)
    line = "samples per language: " + ", ".join(f"{k} {v}" for k, v in _counts(CANONICAL).items())
    assert line in report.summary()


def test_untagged_data_prints_no_language_line(small_data, tmp_path):
    report = validate_data(_tagged(small_data, tmp_path / "d.jsonl", [None] * 8))
    assert report.to_dict()["languages"] == {"(none)": 8} and "per language" not in report.summary()


def test_a_bad_language_names_file_and_line(small_data, tmp_path):
    path = _tagged(small_data, tmp_path / "d.jsonl", ["vi", "english", "vi"], n=3)
    with pytest.raises(DataError) as err:
        validate_data(path)
    assert f"{path}:2" in str(err.value) and "language 'english' is not a language code" in str(err.value)
    assert "[language]" in str(err.value) and "1 bad sample(s) of 3" in str(err.value)


def test_prepared_dir_carries_languages_and_prepare_language_fills_the_rest(small_data, tiny_assets, tmp_path):
    from higgs_ds.data.prepare import prepare_dataset
    from higgs_ds.data.prepared import PreparedDataset
    from higgs_ds.data.sources.config import SourceConfig

    tags = TAGS[:4]
    path = _tagged(small_data, tmp_path / "d.jsonl", tags, n=4)
    out = str(tmp_path / "p")
    prepare_dataset([path], out, tiny_assets.model_path, tiny_assets.audio_tokenizer_path, show_progress=False,
                    shard_size=2, source_config=SourceConfig(language="en"))  # --language en
    filled = [c or "en" for c in CANONICAL[:4]]
    ds = PreparedDataset(out)
    assert ds.languages == filled and [s.language for s in ds.samples] == filled
    assert ds.index["report"]["languages"] == _counts(filled)


def test_prepare_language_flag_is_checked(capsys):
    from higgs_ds.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prepare", "--data", "x.jsonl", "--output", "o", "--language", "english"])
    assert e.value.code == 2 and "language 'english' is not a language code" in capsys.readouterr().err


def test_an_utterance_corpus_passes_its_languages_on(small_data, tmp_path):
    """A corpus that names each utterance's language (an `Utterance.language`) gives it to the built pairs; a bad
    tag is a problem naming the utterance; `--language` fills only the utterances that name none."""
    from higgs_ds.data.sources.config import SourceConfig
    from higgs_ds.data.sources.utterances import Utterance, UtteranceSource

    wav = os.path.join(os.path.dirname(small_data[0]), "wavs")
    wavs = sorted(os.path.join(wav, f) for f in os.listdir(wav))[:4]
    tags = ["vi", None, "english", "vi"]

    class Corpus(UtteranceSource):
        def utterances(self):
            return [Utterance(w, f"text {i}", "spk", "corpus.tsv", i + 1, f"u{i}", t)
                    for i, (w, t) in enumerate(zip(wavs, tags))]

    items = list(Corpus("corpus.tsv", SourceConfig(language="zh")).items())
    good = {it.sample_id: it.language for it in items if not isinstance(it, DataError)}
    bad = [it for it in items if isinstance(it, DataError)]
    assert good == {"u0": "vi", "u1": "zh", "u3": "vi"}
    assert len(bad) == 1 and "corpus.tsv:3" in str(bad[0]) and "'english' is not a language code" in str(bad[0])

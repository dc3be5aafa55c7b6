"""Preference pairs through the one data path: parse, validate (file:line problems), encode each clip once, collate
chosen and rejected into one batch."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from higgs_ds.constants import PAIR_INDEX_KEY
from higgs_ds.data.pairs import PairDataset
from higgs_ds.data.samples import voice_cloning_sample
from higgs_ds.data.synthetic import speech_like
from higgs_ds.data.validate import ValidationConfig, validate_data
from higgs_ds.errors import DataError


def _wav(path, seconds, seed):
    sf.write(str(path), speech_like(np.random.default_rng(seed), seconds, sr=24000), 24000, subtype="PCM_16")
    return path.name


def pair(ref, tgt, rejected, **kw):
    return {**voice_cloning_sample(ref, "Hello there.", tgt, "A target sentence."),
            "rejected": {"type": "audio", "audio_url": rejected}, **kw}


@pytest.fixture
def clips(tmp_path):
    return tmp_path, [_wav(tmp_path / f"c{i}.wav", 0.4 + 0.2 * i, i) for i in range(4)]


def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bad_pairs_are_listed_with_file_and_line(clips):
    tmp_path, (a, b, c, d) = clips
    two_audio = pair(a, b, c)
    two_audio["messages"][4]["content"] = [{"type": "audio", "audio_url": b}, {"type": "audio", "audio_url": d}]
    rows = [pair(a, b, c, id="ok"), pair(a, b, "missing.wav"), {**pair(a, b, c), "rejected": "x"},
            voice_cloning_sample(a, "r", b, "t"), {**pair(a, b, c), "start_index": 2}, two_audio]
    path = _write(tmp_path, rows)
    report = validate_data(path, limits=ValidationConfig(require_pairs=True), on_bad_sample="skip")
    assert [s.sample_id for s in report.samples] == ["ok"]
    kinds = {p.line: p.kind for p in report.problems}
    assert kinds == {2: "missing_audio", 3: "rejected", 4: "rejected", 5: "rejected", 6: "rejected"}
    assert all(p.message.startswith(f"{path}:{p.line} ") for p in report.problems)
    assert len(validate_data(path, limits=ValidationConfig(), on_bad_sample="skip").samples) == 2  # SFT: unpaired ok


def _pairs(path, tok, tiny_assets):
    """The pairs of `path` through the one data path (prepared under --stage dpo's validation)."""
    from higgs_ds.data.training_set import open_training_set

    return PairDataset(open_training_set(path, tok, tiny_assets.model_path, tiny_assets.audio_tokenizer_path,
                                         ValidationConfig(require_pairs=True)))


def test_pair_dataset_encodes_each_clip_once_and_collates_one_batch(clips, tiny_bundle, tiny_assets, monkeypatch):
    import higgs_ds.data.audio as audio_module

    tmp_path, (a, b, c, d) = clips
    path = _write(tmp_path, [pair(a, b, c), pair(a, c, d), pair(a, d, b)])
    model, tok, audio_tok = tiny_bundle
    calls = []
    encode = audio_module.encode_audio
    monkeypatch.setattr(audio_module, "encode_audio",
                        lambda t, url, where="": calls.append(url) or encode(t, url, where))
    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path / "cache"))
    ds = _pairs(path, tok, tiny_assets)
    assert sorted(calls) == sorted(str(tmp_path / x) for x in (a, b, c, d))  # four files, each encoded once
    idx, chosen, rejected = ds[1]
    assert idx == 1 and torch.equal(chosen.input_ids, rejected.input_ids)
    start = int(chosen.audio_ids_start[-1])
    assert torch.equal(chosen.audio_ids_concat[:, :start], rejected.audio_ids_concat[:, :start])
    assert torch.equal(rejected.audio_ids_concat[:, start:], torch.from_numpy(ds.codes(2)[-1].astype(np.int64)))  # d
    batch = ds.collator(model.config)([ds[0], ds[2]])
    assert batch[PAIR_INDEX_KEY].tolist() == [0, 2] and batch["input_ids"].shape[0] == 4
    tokens, clips0 = ds[0][1].input_ids, ds.codes(0)
    chosen_len = len(tokens) + sum(x.shape[1] for x in clips0)
    assert ds.num_tokens(0) == chosen_len + chosen_len - clips0[-1].shape[1] + ds.rejected[0].shape[1]


def test_prepared_pairs_equal_the_pairs_read_from_the_chatml(clips, tiny_bundle, tiny_assets, monkeypatch):
    """Each pair from the prepared set is what boson's tokens and the serve engine's codes give for the ChatML
    sample and its rejected clip (tests/data/reference_samples.py), and collates to the same batch; an unpaired
    prepared row is refused with its file:line."""
    import dataclasses

    import librosa

    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.data.prepare import prepare_dataset
    from tests.data.reference_samples import reference_sample

    tmp_path, (a, b, c, d) = clips
    path = _write(tmp_path, [pair(a, b, c), pair(b, c, d), pair(c, d, a)])
    model, tok, audio_tok = tiny_bundle
    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path / "cache"))
    ds = _pairs(path, tok, tiny_assets)
    expected = []
    for i, src in enumerate(read_chatml(path)):
        chosen = reference_sample(src, tok, audio_tok)
        wav = librosa.load(src.rejected.audio_url, sr=audio_tok.sampling_rate)[0]
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            clip = audio_tok.encode(wav, audio_tok.sampling_rate).squeeze(0).long()
        last = int(chosen.audio_ids_start[-1])
        expected.append((i, chosen, dataclasses.replace(
            chosen, audio_ids_concat=torch.cat([chosen.audio_ids_concat[:, :last], clip], 1))))
    for (i, *got), (j, *want) in zip([ds[k] for k in range(len(ds))], expected):
        assert i == j
        for x, y in zip(got, want):
            for k in ("input_ids", "label_ids", "audio_ids_concat", "audio_ids_start"):
                assert torch.equal(getattr(x, k), getattr(y, k)), (i, k)
    ours, theirs = (ds.collator(model.config)(items) for items in ([ds[0], ds[2]], [expected[0], expected[2]]))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    unpaired = tmp_path / "sft.prepared"  # prepared without --stage dpo: one row is not a pair
    sft = _write(tmp_path, [pair(a, b, c), voice_cloning_sample(a, "r", b, "t")])
    prepare_dataset([sft], str(unpaired), tiny_assets.model_path, tiny_assets.audio_tokenizer_path, show_progress=False)
    with pytest.raises(DataError, match=f"{sft}:2 .*not a preference pair"):
        _pairs(str(unpaired), tok, tiny_assets)


@pytest.mark.parametrize("case, line, kind", [("unpaired", 2, "rejected"), ("missing", 1, "missing_audio"),
                                              ("not_audio", 2, "rejected")])
def test_train_py_stage_dpo_bad_pair_files(clips, case, line, kind, capsys):
    """`train.py --stage dpo`: one message naming file:line and its kind, exit 65, no traceback."""
    from higgs_ds.errors import EXIT_DATA
    from higgs_ds.train import main as train_main

    tmp_path, (a, b, c, _) = clips
    rows = {"unpaired": [pair(a, b, c), voice_cloning_sample(a, "r", b, "t")],
            "missing": [pair(a, b, "gone.wav")],
            "not_audio": [pair(a, b, c), {**pair(a, b, c), "rejected": {"type": "text", "text": "no"}}]}[case]
    path = _write(tmp_path, rows)
    rc = train_main(["--stage", "dpo", "--train_data", path, "--validate_data_only"])
    err = capsys.readouterr().err
    assert rc == EXIT_DATA and "Traceback" not in err and err.startswith("error:"), err
    assert f"{path}:{line}" in err and kind in err, err

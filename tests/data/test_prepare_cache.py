"""Training's prepare cache (data/training_set.py, auto_prepare.py): a source is prepared once, each audio file
encoded once; a second start reuses the copy without the audio tokenizer; a changed file or another tokenizer gets
a new copy; `higgs-ds prepare` without --output fills the copy training uses; the codes are the serve engine's."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from higgs_ds.data.prepare import audio_tokenizer_id, cache_dir_for
from higgs_ds.data.samples import voice_cloning_sample
from higgs_ds.data.training_set import open_training_set, prepare_training_set
from higgs_ds.data.validate import ValidationConfig


@pytest.fixture
def shared_clips(tmp_path, small_data, monkeypatch):
    """train.jsonl of 3 samples on 4 clips (one reference shared by all three), in a fresh cache."""
    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path / "cache"))
    wavs = os.path.join(os.path.dirname(small_data[0]), "wavs")
    ref = os.path.join(wavs, "s0000_ref.wav")
    rows = [voice_cloning_sample(ref, "Ref.", os.path.join(wavs, f"s000{i}_tgt.wav"), f"Target {i}.") for i in range(3)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _count_encodes(monkeypatch):
    import higgs_ds.data.audio as audio

    calls, real = [], audio.encode_audio
    monkeypatch.setattr(audio, "encode_audio", lambda t, url, where="": calls.append(url) or real(t, url, where))
    return calls


def test_each_clip_encoded_once_and_a_second_start_reuses_the_copy(shared_clips, tiny_assets, tiny_bundle,
                                                                   monkeypatch):
    import higgs_ds.data.prepare as prepare
    import higgs_ds.models.audio_tokenizer as audio_tokenizer

    paths = (tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    calls = _count_encodes(monkeypatch)
    first = open_training_set(shared_clips, tiny_bundle[1], *paths)
    assert len(first) == 3 and len(calls) == len(set(calls)) == 4  # the shared reference once
    assert first.root.startswith(os.environ["HIGGS_DS_CACHE"])
    monkeypatch.setattr(prepare, "prepare_dataset", lambda *a, **k: pytest.fail("prepared again"))
    monkeypatch.setattr(audio_tokenizer, "load_audio_tokenizer", lambda *a, **k: pytest.fail("audio tokenizer"))
    again = open_training_set(shared_clips, tiny_bundle[1], *paths)
    assert again.root == first.root and len(calls) == 4
    for i in range(3):
        assert torch.equal(again[i].audio_ids_concat, first[i].audio_ids_concat)
        assert again[i].audio_ids_concat.dtype == torch.long and again.num_tokens(i) == first.num_tokens(i)
    with open(shared_clips, "a") as f:  # a changed file: a new key, prepared again
        f.write("\n")
    with pytest.raises(BaseException, match="prepared again"):
        prepare_training_set(shared_clips, *paths)


def test_tokenizer_identity_keys_the_copy(tiny_assets, small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HIGGS_DS_CACHE", str(tmp_path / "cache"))
    tk = tiny_assets.audio_tokenizer_path
    assert audio_tokenizer_id(tk) == audio_tokenizer_id(tk) and len(audio_tokenizer_id(tk)) == 16
    other = tmp_path / "tk"
    shutil.copytree(tk, other, ignore=shutil.ignore_patterns("semantic_teacher"))
    (other / "config.json").write_text((other / "config.json").read_text() + " ")
    assert audio_tokenizer_id(str(other)) != audio_tokenizer_id(tk)
    keys = [cache_dir_for(small_data[0], tiny_assets.model_path, t, ValidationConfig()) for t in (tk, str(other))]
    assert keys[0] != keys[1] and keys[0].startswith(str(tmp_path / "cache" / "prepared"))


def test_cli_prepare_fills_the_copy_training_uses(shared_clips, tiny_assets, capsys):
    from higgs_ds.cli import main

    assert main(["prepare", "--data", shared_clips]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["num_samples"] == 3 and stats["shards_skipped"] == 0
    assert stats["output"] == prepare_training_set(shared_clips, tiny_assets.model_path,
                                                   tiny_assets.audio_tokenizer_path)
    assert main(["prepare", "--data", shared_clips]) == 0  # a rerun keeps every finished shard
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["output"] == stats["output"] and again["shards_skipped"] == again["shards"] == 1


@pytest.mark.slow  # ~30 s on a loaded 2-core machine: builds a serve engine
def test_codes_equal_the_serve_engine(shared_clips, tiny_assets, tiny_bundle):
    from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine

    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.models.audio_tokenizer import serve_engine_audio_tokenizer

    with serve_engine_audio_tokenizer():  # boson's own load, plus our offline teacher and narrow widths
        engine = HiggsAudioServeEngine(tiny_assets.model_path, tiny_assets.audio_tokenizer_path, device="cpu",
                                       torch_dtype=torch.float32, kv_cache_lengths=[64])
    # the engine loads its own audio tokenizer; the prepare loaded one separately
    ds = open_training_set(shared_clips, tiny_bundle[1], tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    seen, collate = [], engine.collator
    engine.collator = lambda samples: seen.append(samples[0]) or collate(samples)  # the codes before collation
    for i, src in enumerate(read_chatml(shared_clips)):
        engine._prepare_inputs(src.sample)
        ours = np.concatenate(ds.codes(i), axis=1)
        assert torch.equal(seen[-1].audio_ids_concat.cpu(), torch.from_numpy(ours.astype(np.int64)))

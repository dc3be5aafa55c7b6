"""Audio-code cache: hits and misses, re-encoding of changed files, resume after a kill, serve-engine equality."""
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from higgs_ds.data import code_cache as cc
from higgs_ds.data.code_cache import CodeCache, prepare_codes, tokenizer_id
from higgs_ds.durable import file_sha256


@pytest.fixture(scope="module")
def filled(tmp_path_factory, tiny_assets, tiny_bundle):
    """(train.jsonl of 2 samples = 4 short clips, a cache dir holding their codes)."""
    from higgs_ds.data.synthetic import create_sample_data

    root = tmp_path_factory.mktemp("cc")
    train, _ = create_sample_data(str(root / "data"), num_samples=3, seed=3, min_seconds=0.3, max_seconds=0.5)
    stats = _prepare(train, tiny_assets, tiny_bundle, root / "cache")
    assert stats["encoded"] == 4 and stats["cached_before"] == 0 and stats["audio_files"] == 4
    return train, root / "cache"


@pytest.fixture
def copied(filled, tmp_path):
    """A private copy of the data and of its filled cache."""
    shutil.copytree(os.path.dirname(filled[0]), tmp_path / "data")
    shutil.copytree(filled[1], tmp_path / "cache")
    return str(tmp_path / "data" / "train.jsonl"), tmp_path / "cache"


def _prepare(data, tiny_assets, tiny_bundle, cache_dir, **kw):
    return prepare_codes([data], tiny_assets.audio_tokenizer_path, str(cache_dir), audio_tokenizer=tiny_bundle[2],
                         show_progress=False, **kw)


def test_hit_and_changed_file_is_reencoded(copied, tiny_assets, tiny_bundle):
    data, cache_dir = copied
    again = _prepare(data, tiny_assets, tiny_bundle, cache_dir)
    assert again["encoded"] == 0 and again["cached_before"] == 4
    wav = os.path.join(os.path.dirname(data), "wavs", "s0000_tgt.wav")
    old_key = file_sha256(wav)
    sf.write(wav, np.random.default_rng(1).uniform(-0.5, 0.5, 24000).astype(np.float32), 24000)
    changed = _prepare(data, tiny_assets, tiny_bundle, cache_dir)
    assert changed["encoded"] == 1 and changed["cached_before"] == 3
    cache = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, str(cache_dir))
    codes = cache.get(file_sha256(wav))
    assert codes.dtype == np.int16 and isinstance(codes.base, np.memmap) and codes.shape == (8, 25)
    assert cache.get(old_key) is not None and cache.get("0" * 64) is None


def test_resumes_after_a_kill(filled, tiny_assets, tiny_bundle, tmp_path, monkeypatch):
    import higgs_ds.data.audio as audio

    calls, real = [], audio.encode_audio

    def dying(*a, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while encoding the 4th file
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(audio, "encode_audio", dying)
    with pytest.raises(KeyboardInterrupt):
        _prepare(filled[0], tiny_assets, tiny_bundle, tmp_path / "c", shard_size=2)
    monkeypatch.setattr(audio, "encode_audio", real)
    resumed = _prepare(filled[0], tiny_assets, tiny_bundle, tmp_path / "c", shard_size=2)
    assert resumed["cached_before"] == 2 and resumed["encoded"] == 2  # the flushed shard of 2 survived the kill
    assert sorted(os.listdir(tmp_path / "c")) == [".lock", "index.json", "shard-00000.npy", "shard-00001.npy"]


def test_dataset_reads_the_cache_and_matches_on_the_fly(filled, tiny_assets, tiny_bundle, tmp_path, caplog):
    from higgs_ds.data.loaders import load_dataset

    _, tok, audio_tok = tiny_bundle
    empty = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, str(tmp_path / "empty"))
    fresh = load_dataset(filled[0], tok, audio_tok, show_progress=False, code_cache=empty)
    assert fresh.cache_misses == 4 and "4 of 4 audio files were not in the code cache" in caplog.text
    cache = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, str(filled[1]))
    cached = load_dataset(filled[0], tok, None, show_progress=False, code_cache=cache)  # no audio tokenizer needed
    assert cached.cache_misses == 0 and len(cached) == 2
    for i in range(len(fresh)):
        assert torch.equal(cached[i].audio_ids_concat, fresh[i].audio_ids_concat)
        assert cached[i].audio_ids_concat.dtype == torch.long and cached.num_tokens(i) == fresh.num_tokens(i)


@pytest.mark.slow  # ~30 s on a loaded 2-core machine: builds a serve engine
def test_codes_equal_the_serve_engine(filled, tiny_assets):
    from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine

    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.models.audio_tokenizer import serve_engine_audio_tokenizer

    tk_dir = tiny_assets.audio_tokenizer_path
    with serve_engine_audio_tokenizer():  # boson's own load, plus our offline teacher and narrow widths
        engine = HiggsAudioServeEngine(tiny_assets.model_path, tk_dir, device="cpu", torch_dtype=torch.float32,
                                       kv_cache_lengths=[64])
    # the engine loads its own audio tokenizer; the cache was filled with a separately loaded one
    cache = CodeCache.for_tokenizer(tk_dir, str(filled[1]))
    seen, collate = [], engine.collator
    engine.collator = lambda samples: seen.append(samples[0]) or collate(samples)  # the codes before collation
    for src in read_chatml(filled[0]):
        engine._prepare_inputs(src.sample)
        served = seen[-1].audio_ids_concat
        urls = [src.sample.messages[i].content.audio_url for i in (2, 4)]
        ours = np.concatenate([cache.get(file_sha256(u)) for u in urls], axis=1)
        assert torch.equal(served.cpu(), torch.from_numpy(ours.astype(np.int64)))


def test_tokenizer_identity_and_mismatch(tiny_assets, tmp_path):
    tk = tiny_assets.audio_tokenizer_path
    assert tokenizer_id(tk) == tokenizer_id(tk) and len(tokenizer_id(tk)) == 16
    other = tmp_path / "tk"
    shutil.copytree(tk, other, ignore=shutil.ignore_patterns("semantic_teacher"))
    (other / "config.json").write_text((other / "config.json").read_text() + " ")
    assert tokenizer_id(str(other)) != tokenizer_id(tk)
    CodeCache(str(tmp_path / "c"), tokenizer_id(tk)).add({"k": np.zeros((8, 3), np.int64)})
    with pytest.raises(ValueError, match="use another --code_cache_dir"):
        CodeCache(str(tmp_path / "c"), tokenizer_id(str(other)))
    assert cc.default_cache_dir(tk).endswith(os.path.join("codes", tokenizer_id(tk)))


def test_cli_prepare_skips_cached_files(copied, tiny_assets, capsys):
    from higgs_ds.cli import main

    data, cache_dir = copied
    assert main(["prepare", "--data", data, "--audio_tokenizer_path", tiny_assets.audio_tokenizer_path,
                 "--code_cache_dir", str(cache_dir)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["encoded"] == 0 and stats["cached_before"] == 4 and stats["cache_dir"] == str(cache_dir)

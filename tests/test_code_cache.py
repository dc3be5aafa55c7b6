"""Audio-code cache: hits and misses, re-encoding of changed files, resume after a kill, serve-engine equality."""
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from higgs_ds.data import code_cache as cc
from higgs_ds.data.code_cache import CodeCache, file_sha256, prepare_codes, tokenizer_id


@pytest.fixture
def data_copy(small_data, tmp_path):
    src = os.path.dirname(small_data[0])
    shutil.copytree(src, tmp_path / "data")
    return str(tmp_path / "data" / "train.jsonl")


def _prepare(data, tiny_assets, tiny_bundle, cache_dir, **kw):
    return prepare_codes([data], tiny_assets.audio_tokenizer_path, str(cache_dir), audio_tokenizer=tiny_bundle[2],
                         show_progress=False, **kw)


def test_hit_miss_and_changed_file_is_reencoded(data_copy, tiny_assets, tiny_bundle, tmp_path):
    first = _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c")
    assert first["encoded"] == 16 and first["cached_before"] == 0
    again = _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c")
    assert again["encoded"] == 0 and again["cached_before"] == 16
    wav = os.path.join(os.path.dirname(data_copy), "wavs", "s0000_tgt.wav")
    old_key = file_sha256(wav)
    sf.write(wav, np.random.default_rng(1).uniform(-0.5, 0.5, 24000).astype(np.float32), 24000)
    changed = _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c")
    assert changed["encoded"] == 1 and changed["cached_before"] == 15
    cache = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, str(tmp_path / "c"))
    codes = cache.get(file_sha256(wav))
    assert codes.dtype == np.int16 and isinstance(codes.base, np.memmap) and codes.shape == (8, 25)
    assert cache.get(old_key) is not None and cache.get("0" * 64) is None


def test_resumes_after_a_kill(data_copy, tiny_assets, tiny_bundle, tmp_path, monkeypatch):
    import higgs_ds.data.audio as audio

    calls, real = [], audio.encode_audio

    def dying(*a, **kw):
        if len(calls) == 6:
            raise KeyboardInterrupt  # killed mid-run
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(audio, "encode_audio", dying)
    with pytest.raises(KeyboardInterrupt):
        _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c", shard_size=4)
    monkeypatch.setattr(audio, "encode_audio", real)
    resumed = _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c", shard_size=4)
    assert resumed["cached_before"] == 4 and resumed["encoded"] == 12  # the one flushed shard of 4 survived
    assert sorted(os.listdir(tmp_path / "c")) == [".lock", "index.json"] + [f"shard-0000{i}.npy" for i in range(4)]


def test_dataset_reads_the_cache_and_matches_on_the_fly(data_copy, tiny_assets, tiny_bundle, tmp_path, caplog):
    from higgs_ds.data.loaders import load_dataset

    _, tok, audio_tok = tiny_bundle
    cache = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, str(tmp_path / "c"))
    fresh = load_dataset(data_copy, tok, audio_tok, show_progress=False)
    partial = load_dataset(data_copy, tok, audio_tok, show_progress=False, code_cache=cache)
    assert partial.cache_misses == 16 and "16 of 16 audio files were not in the code cache" in caplog.text
    _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c")
    cache.reload()
    cached = load_dataset(data_copy, tok, None, show_progress=False, code_cache=cache)  # no tokenizer needed
    assert cached.cache_misses == 0
    for i in range(len(fresh)):
        assert torch.equal(cached[i].audio_ids_concat, fresh[i].audio_ids_concat)
        assert cached[i].audio_ids_concat.dtype == torch.long and cached.num_tokens(i) == fresh.num_tokens(i)


def test_codes_equal_the_serve_engine(data_copy, tiny_assets, tiny_bundle, tmp_path):
    from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine

    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.models.audio_tokenizer import semantic_teacher_from

    tk_dir = tiny_assets.audio_tokenizer_path
    with semantic_teacher_from(os.path.join(tk_dir, "semantic_teacher")):
        engine = HiggsAudioServeEngine(tiny_assets.model_path, tk_dir, device="cpu", torch_dtype=torch.float32,
                                       kv_cache_lengths=[64])
    # the engine loads its own audio tokenizer; our cache is filled with a separately loaded one
    _prepare(data_copy, tiny_assets, tiny_bundle, tmp_path / "c")
    cache = CodeCache.for_tokenizer(tk_dir, str(tmp_path / "c"))
    seen, collate = [], engine.collator
    engine.collator = lambda samples: seen.append(samples[0]) or collate(samples)  # the codes before collation
    for src in list(read_chatml(data_copy))[:3]:
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

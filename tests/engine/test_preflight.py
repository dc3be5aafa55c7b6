"""Bad configuration fails with a clear error naming the file or flag, before any model loads."""
import json
import os
import shutil
from collections import namedtuple

import pytest

from higgs_ds.engine.ds_config import load_ds_config
from higgs_ds.engine.preflight import check_free_space, check_output_dir, estimate_bytes
from higgs_ds.errors import ConfigError, OutputDirError
from higgs_ds.models.loading import ModelPaths
from tests.helpers import ROOT

KW = dict(micro_batch_size=2, grad_accum_steps=1, world_size=1, learning_rate=1e-4, total_steps=10, warmup_steps=1)


def _config(tmp_path, **changes):
    with open(os.path.join(ROOT, "ds_configs", "cpu_zero2.json")) as f:
        cfg = json.load(f)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_unknown_or_bad_zero_option_names_key_and_file(tmp_path):
    path = _config(tmp_path, zero_optimization__reduce_bucket_sise=5)
    with pytest.raises(ConfigError, match=r"ds\.json: zero_optimization\.reduce_bucket_sise: Extra inputs"):
        load_ds_config(path, **KW)
    with pytest.raises(ConfigError, match=r"ds\.json: zero_optimization\.stage"):
        load_ds_config(_config(tmp_path, zero_optimization__stage="two"), **KW)


def test_bf16_on_a_device_without_bf16(tmp_path, monkeypatch):
    from deepspeed.accelerator import get_accelerator

    path = _config(tmp_path, bf16__enabled=True)
    load_ds_config(path, **KW)  # the CPU accelerator supports bf16
    monkeypatch.setattr(type(get_accelerator()), "is_bf16_supported", lambda self: False)
    with pytest.raises(ConfigError, match=r"ds\.json: bf16\.enabled is true but this cpu device does not support"):
        load_ds_config(path, **KW)
    load_ds_config(_config(tmp_path), **KW)  # fp32 is fine


def test_configs_that_disable_the_nonfinite_check(tmp_path):
    with pytest.raises(ConfigError, match="compute_grad_norm = false"):
        load_ds_config(_config(tmp_path, zero_optimization__compute_grad_norm=False), **KW)
    with pytest.raises(ConfigError, match="check_grad_overflow = false"):
        load_ds_config(_config(tmp_path, bf16__enabled=True, bf16__check_grad_overflow=False), **KW)


def test_missing_model_files_name_the_path(tiny_assets, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_assets.model_path, model)
    audio = tmp_path / "audio_tokenizer"
    audio.mkdir()
    (audio / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"--audio_tokenizer_path: {audio}/model.pth not found"):
        ModelPaths.resolve(str(model), str(audio))
    audio_ok = tiny_assets.audio_tokenizer_path
    ModelPaths.resolve(str(model), audio_ok)
    (model / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"--model_path: {model}/model.safetensors not found"):
        ModelPaths.resolve(str(model), audio_ok)
    shutil.copy(os.path.join(tiny_assets.model_path, "model.safetensors"), model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"--tokenizer_path: {model}/tokenizer.json not found"):
        ModelPaths.resolve(str(model), audio_ok)


def test_unwritable_and_too_small_output_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match=f"--output_dir {blocker}/out is not writable"):
        check_output_dir(str(blocker / "out"))
    check_output_dir(str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []  # the probe file is gone
    need = estimate_bytes(1_000_000, save_every=100, keep_last=3)
    assert need >= 1_000_000 * (4 * 20 + 4)  # 4 coexisting checkpoints of 20 B/param + the adapter
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * need, 9 * need, need - 1))
    with pytest.raises(OutputDirError, match="MiB free, this run needs about"):
        check_free_space(str(tmp_path), 1_000_000, 100, 3)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * need, 9 * need, need))
    check_free_space(str(tmp_path), 1_000_000, 100, 3)

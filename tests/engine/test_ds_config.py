"""DeepSpeed config resolution: "auto" fields from the CLI, contradictions caught before the model loads."""
import json

import pytest

from higgs_ds.engine.ds_config import load_ds_config
from higgs_ds.errors import ConfigError

KW = dict(micro_batch_size=4, grad_accum_steps=2, world_size=8, learning_rate=2e-4, total_steps=100, warmup_steps=5)


def test_shipped_configs_resolve():
    for name, bf16 in (("ds_configs/zero2.json", True), ("ds_configs/cpu_zero2.json", False)):
        cfg, opt = load_ds_config(name, **KW)
        assert cfg["train_batch_size"] == 4 * 2 * 8 and cfg["train_micro_batch_size_per_gpu"] == 4
        assert cfg["zero_optimization"]["stage"] == 2 and cfg["bf16"]["enabled"] is bf16
        assert opt["lr"] == 2e-4 and "optimizer" not in cfg
        assert cfg["scheduler"]["params"]["total_num_steps"] == 100
        assert cfg["scheduler"]["params"]["warmup_num_steps"] == 5


def test_contradiction_is_an_error(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "train_batch_size": 64}))
    with pytest.raises(ConfigError, match="contradicts --batch_size"):
        load_ds_config(str(p), **KW, explicit={"--batch_size"})
    cfg, _ = load_ds_config(str(p), **{**KW, "grad_accum_steps": 1})  # flag not given: the JSON wins
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    with pytest.raises(ConfigError, match="train_batch_size = 64 contradicts"):
        load_ds_config(str(p), **KW)  # 8 x 2 x 8 = 128 != 64


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_ds_config(str(tmp_path / "none.json"), **KW)
    p = tmp_path / "bad.json"
    p.write_text('{\n "a": 1,\n}')
    with pytest.raises(ConfigError, match=r"bad\.json:3: malformed JSON"):
        load_ds_config(str(p), **KW)
    p.write_text(json.dumps({"optimizer": {"type": "Lamb"}}))
    with pytest.raises(ConfigError, match="not supported"):
        load_ds_config(str(p), **KW)


def test_offload_and_zero3_configs_resolve():
    off, _ = load_ds_config("ds_configs/zero2_offload.json", **KW)
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert off["zero_force_ds_cpu_optimizer"] is False  # the client torch AdamW steps on CPU
    z3, _ = load_ds_config("ds_configs/zero3.json", **KW)
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] is True
    cpu3, _ = load_ds_config("ds_configs/cpu_zero3.json", **KW)
    assert cpu3["zero_optimization"]["stage"] == 3 and cpu3["bf16"]["enabled"] is False


def test_model_dtype_follows_the_config():
    import torch

    from higgs_ds.engine.ds_config import model_dtype

    for name in ("zero2", "zero3", "zero2_offload", "cpu_zero2", "cpu_zero3"):
        cfg, _ = load_ds_config(f"ds_configs/{name}.json", **KW)
        assert model_dtype(cfg) == (torch.bfloat16 if cfg["bf16"]["enabled"] else torch.float32), name
    assert model_dtype({"fp16": {"enabled": True}}) == torch.float16


def test_loading_in_bf16_equals_deepspeeds_cast(tiny_assets):
    """Loading straight in bf16 (no fp32 copy in host memory) gives the same bits as loading fp32 and casting, which
    is what DeepSpeed's bf16 engine did to the module (`module.bfloat16()`)."""
    import torch

    from higgs_ds.models.loading import load_model

    direct = load_model(tiny_assets.model_path, torch.bfloat16)
    cast = load_model(tiny_assets.model_path, torch.float32).bfloat16()
    assert all(p.dtype == torch.bfloat16 for p in direct.parameters())
    ours, theirs = direct.state_dict(), cast.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)

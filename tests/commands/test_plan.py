"""`higgs-ds plan` (higgs_ds/commands/plan.py): parameter counts, model states, and memory against measurements.

The memory model's stated error (docs/PERF.md): within 15 % of measured peak memory, on CPU (bench/step.py cells, each
in its own process) and on one H200 (bench/results/gpu_step*_h200.json, the released configuration).
"""
import json
import os

import pytest
import torch

from higgs_ds.commands.plan import Dims, estimate, main, model_states, parameter_counts
from tests.helpers import ROOT

TOL = 0.15
RELEASE = os.path.join(ROOT, "bench", "configs", "release", "config.json")


def _release():
    with open(RELEASE) as f:
        return json.load(f)


@pytest.mark.parametrize("preset, to_save", [("attn_mlp_audio", ()), ("attn", ("audio_head", "audio_embeddings"))])
def test_parameter_counts_match_peft(tiny_assets, preset, to_save):
    """Counted from config.json alone == the parameters of the model peft builds (on the meta device)."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    from higgs_ds.models.lora import apply_lora

    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        cfg = json.load(f)
    with torch.device("meta"):
        model = apply_lora(HiggsAudioModel(HiggsAudioConfig(**cfg)), r=8, preset=preset, modules_to_save=to_save)
    real = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert parameter_counts(Dims.from_config(cfg), 8, preset, modules_to_save=to_save) == real


def test_release_fixture_counts():
    """The committed released config: 5,771,283,456 base parameters (NOTES.md) + 39,452,672 LoRA r=16 (280 modules)."""
    total, lora = parameter_counts(Dims.from_config(_release()), 16)
    assert (total - lora, lora) == (5_771_283_456, 39_452_672)


@pytest.mark.parametrize("gpus", [1, 2, 8, 64])
@pytest.mark.parametrize("offload", [False, True])
def test_model_states_match_deepspeed_estimate(gpus, offload):
    """ZeRO-1/2 bf16 model states of the trainable parameters == DeepSpeed's own estimator (frozen weights aside)."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n = 39_452_672
    zero = {"stage": 2, **({"offload_optimizer": {"device": "cpu"}} if offload else {})}
    for stage in (1, 2):
        gpu, host, _ = model_states(n, n, {"bf16": {"enabled": True}, "zero_optimization": {**zero, "stage": stage}}, gpus)
        ds_cpu, ds_gpu = estimate_zero2_model_states_mem_needs(n, num_gpus_per_node=gpus, cpu_offload=offload)
        assert abs(gpu - ds_gpu) <= 1 and (not offload or abs(host - ds_cpu) <= 1)
    frozen_gpu, _, _ = model_states(n + 1000, n, {"bf16": {"enabled": True}, "zero_optimization": zero}, gpus)
    assert frozen_gpu == pytest.approx(gpu + 2 * 1000)  # frozen weights: bf16, replicated under ZeRO-1/2


# (measured) one H200, bf16, plain AdamW on LoRA r=16, released config; bench/results/gpu_step*_h200.json
H200 = [("higgs_ds", 4096, "off", 26.14), ("higgs_ds", 8192, "off", 41.26), ("higgs_ds+ckpt", 4096, "all", 12.36),
        ("higgs_ds+ckpt", 8192, "all", 13.68), ("naive", 4096, "off", 40.44), ("naive", 8192, "off", 69.63)]


@pytest.mark.parametrize("name, tokens, ckpt, measured", H200)
def test_h200_measurements(name, tokens, ckpt, measured):
    files = [os.path.join(ROOT, "bench", "results", f) for f in ("gpu_step_h200.json", "gpu_step_ckpt_h200.json")]
    rows = [r for f in files for r in json.load(open(f))["rows"] if r["name"] == name and r["seq"] == tokens]
    assert any(abs(r["peak_gib"] - measured) < 0.02 for r in rows)  # the numbers above are the committed results
    naive = name == "naive"
    est = estimate(_release(), tokens, ckpt=ckpt, loss="naive" if naive else "fused", fp32_adapters=naive)
    assert abs(est["total_gib"] - measured) <= TOL * measured, (est["total_gib"], measured)


# CPU cells of bench/step.py: (variant, hidden, layers, intermediate, tokens)


def test_cli_warns_and_suggests(capsys):
    """24k tokens on one 80 GB H100 without checkpointing do not fit; the plan says what will (and it fits)."""
    assert main(["--model_path", os.path.dirname(RELEASE), "--ds_config", "none", "--tokens_per_gpu", "24576",
                 "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "--activation_checkpointing" in out
    suggestion = out.split("try ")[-1].split()
    ckpt = suggestion[suggestion.index("--activation_checkpointing") + 1]
    k = int(suggestion[suggestion.index("--checkpoint_every_k") + 1]) if "--checkpoint_every_k" in suggestion else 2
    assert estimate(_release(), 24576, gpu="h100", ckpt=ckpt, every_k=k)["fits"]
    assert main(["--model_path", os.path.dirname(RELEASE), "--ds_config", "/nonexistent.json", "--tokens_per_gpu", "8"]) == 2
    assert "/nonexistent.json" in capsys.readouterr().err


@pytest.mark.parametrize("finetune", ["lora", "audio", "full"])
def test_parameter_counts_match_each_finetune_mode(tiny_assets, finetune):
    """`--finetune` modes (models/finetune.py): the plan's (all, trainable) == the model `prepare_model` builds."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    from higgs_ds.models.finetune import prepare_model

    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        cfg = json.load(f)
    with torch.device("meta"):
        model = prepare_model(HiggsAudioModel(HiggsAudioConfig(**cfg)), finetune, r=8)
    real = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert parameter_counts(Dims.from_config(cfg), 8, finetune=finetune) == real
    assert estimate(cfg, 512, lora_r=8, finetune=finetune)["trainable"] == real[1]


@pytest.mark.parametrize("finetune, to_save", [("lora", ()), ("lora", ("text_head", "audio_embeddings")),
                                               ("audio", ()), ("full", ())])
def test_trained_heads_match_the_loss(tiny_assets, finetune, to_save):
    """The heads the plan charges the fused loss's gradient buffers for == the head weights that require grad."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    from higgs_ds.commands.plan import CHUNK_BYTES
    from higgs_ds.loss.fused import DEFAULT_CHUNK_ELEMENTS
    from higgs_ds.loss.hidden import head_weights
    from higgs_ds.models.finetune import prepare_model

    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        cfg = json.load(f)
    with torch.device("meta"):
        model = prepare_model(HiggsAudioModel(HiggsAudioConfig(**cfg)), finetune, r=8, modules_to_save=to_save)
    trained = sum(w.numel() for w in head_weights(model) if w.requires_grad)
    assert Dims.from_config(cfg).trained_heads(finetune, to_save) == trained
    assert CHUNK_BYTES["fp32"] == 4 * DEFAULT_CHUNK_ELEMENTS

"""ZeRO-3 on 2 CPU ranks with validation sets that split unevenly (1, 3 and 5 samples, --batch_size 2).

Under ZeRO-3 every forward all-gathers the weights with every rank: a rank with fewer eval batches used to go on to
the final all-reduce while the other waited in a gather, and the run hung until the distributed timeout without
writing its adapter. Each run here must finish, its evaluation must equal the same run's under ZeRO-2 and a
one-process evaluation of the adapter it wrote by the naive token-weighted reference (tests/loss/reference_loss.py),
and `perf/mfu`'s FLOPs per token must equal ZeRO-2's (ZeRO-3 leaves each rank empty placeholders of the weights).
"""
import json
import os

import pytest

from tests.helpers import DEEPSPEED, PYTHON, run_cmd

pytestmark = pytest.mark.slow
PORTS = {1: 29711, 3: 29713, 5: 29715}
STAGES = {"zero3": ("ds_configs/cpu_zero3.json", 0), "zero2": ("ds_configs/cpu_zero2.json", 10)}


def _run(n, stage, train, val, out, code_cache):
    ds_config, port_offset = STAGES[stage]
    run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", str(PORTS[n] + port_offset), "higgs_ds/train.py",
             "--deepspeed", ds_config, "--train_data", train, "--val_data", val, "--no_auto_prepare",
             "--code_cache_dir", code_cache,
             "--batch_size", "2", "--max_steps", "2", "--eval_every", "1", "--learning_rate", "3e-3", "--output_dir",
             out, "--no_progress", "--dist_timeout_minutes", "2"], env={"DS_ACCELERATOR": "cpu"}, timeout=600)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(small_data, small_code_cache, tmp_path_factory):
    """{n: (val path, {stage: (output dir, metrics.json)})}."""
    out = {}
    with open(small_data[0]) as f:
        lines = f.readlines()
    for n in PORTS:
        d = tmp_path_factory.mktemp(f"val{n}")
        val = os.path.join(os.path.dirname(small_data[0]), f"val{n}.jsonl")  # beside train.jsonl: relative audio paths
        with open(val, "w") as f:
            f.write("".join(lines[:n]))
        out[n] = (val, {stage: (str(d / stage), _run(n, stage, small_data[0], val, str(d / stage), small_code_cache))
                        for stage in STAGES})
    return out


@pytest.mark.parametrize("n", sorted(PORTS))
def test_zero3_eval_on_uneven_split_finishes_and_equals_zero2_and_one_process(runs, n, tiny_assets, tiny_bundle,
                                                                    small_code_cache):
    from peft import PeftModel

    from higgs_ds.data.code_cache import CodeCache
    from higgs_ds.data.loaders import load_dataset
    from higgs_ds.models.loading import load_model
    from tests.loss.reference_loss import token_weighted_loss

    val_path, by_stage = runs[n]
    out, metrics = by_stage["zero3"]
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))
    assert metrics["val"]["samples"] == n  # every sample counted once, the fillers never
    zero2 = by_stage["zero2"][1]  # the same run under ZeRO-2 (same updates up to float rounding, ~1e-7 apart)
    for k in ("loss/total", "loss/text", "loss/audio", "acc/audio"):
        assert metrics["val"][k] == pytest.approx(zero2["val"][k], rel=1e-5, abs=1e-6), k
    _, tok, audio_tok = tiny_bundle
    val = load_dataset(val_path, tok, audio_tok, show_progress=False,
                       code_cache=CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, small_code_cache))
    model = PeftModel.from_pretrained(load_model(metrics["model_path"]), os.path.join(out, "adapter")).eval()
    assert token_weighted_loss(model, val) == pytest.approx(metrics["val"]["loss/total"], rel=1e-4)


def test_flops_per_token_under_zero3_equals_zero2s(runs, tiny_assets):
    """MFU = tokens/s x FLOPs per token / peak: with the same FLOPs per token the two stages' MFU differ only by their
    measured throughput."""
    from higgs_ds.engine.metrics import flops_per_token
    from higgs_ds.models.finetune import FinetuneConfig
    from higgs_ds.models.loading import load_model

    unsharded = flops_per_token(FinetuneConfig().apply(load_model(tiny_assets.model_path)))
    for _, by_stage in runs.values():
        zero3, zero2 = by_stage["zero3"][1]["flops_per_token"], by_stage["zero2"][1]["flops_per_token"]
        assert zero3 == pytest.approx(zero2, rel=0.01) and zero2 == pytest.approx(unsharded, rel=1e-9)


def test_generation_during_training_is_refused_under_zero3(small_data, tmp_path):
    proc = run_cmd([PYTHON, "higgs_ds/train.py", "--deepspeed", "ds_configs/cpu_zero3.json", "--train_data",
                    small_data[0], "--val_data", small_data[1], "--sample_every", "1", "--output_dir",
                    str(tmp_path / "run")], env={"DS_ACCELERATOR": "cpu"}, check=False, timeout=300)
    assert proc.returncode == 78, proc.stdout[-3000:]
    assert "not supported under ZeRO-3" in proc.stdout and "Traceback" not in proc.stdout

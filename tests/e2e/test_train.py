"""End to end: train.py under the deepspeed launcher (2 CPU ranks, ZeRO-2) and as a plain process."""
import json
import os

import pytest

from tests.helpers import DEEPSPEED, PYTHON, run_cmd

pytestmark = pytest.mark.slow


def _steps(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def two_rank_run(small_data, tiny_assets, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run2"))
    proc = run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", "29611", "higgs_ds/train.py",
                    "--deepspeed", "ds_configs/cpu_zero2.json", "--train_data", small_data[0],
                    "--val_data", small_data[0], "--batch_size", "2", "--num_epochs", "40", "--max_steps", "60",
                    "--learning_rate", "3e-3", "--output_dir", out, "--log_every", "10"],
                   env={"DS_ACCELERATOR": "cpu"})
    return out, proc.stdout


def test_two_rank_zero2_lowers_audio_loss(two_rank_run):
    out, log = two_rank_run
    metrics = _steps(out)
    assert metrics["world_size"] == 2
    audio = [h["loss/audio"] for h in metrics["history"]]
    assert len(audio) == 60
    first, last = sum(audio[:5]) / 5, sum(audio[-5:]) / 5
    assert first > 6.0, f"step-0 audio loss {first:.3f} looks like the copy-task bug (should be ~ln 1026)"
    assert first - last > 0.75, f"audio loss did not drop by a clear margin: {first:.3f} -> {last:.3f}"
    assert "step 60/60" in log and "ZeRO stage 2" in log


def test_adapter_reloads_with_peft_and_reproduces_the_trained_model(two_rank_run, tiny_bundle, small_dataset):
    """Base model + saved adapter (PeftModel.from_pretrained) gives the validation loss the trained engine logged."""
    from peft import PeftModel

    from higgs_ds.models.loading import load_model
    from tests.loss.reference_loss import token_weighted_loss

    out, _ = two_rank_run
    metrics = _steps(out)
    base = load_model(metrics["model_path"])
    model = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).eval()
    val = small_dataset  # small_data's train.jsonl as training reads it (its prepared copy)
    reloaded = token_weighted_loss(model, val)  # the engine's eval: token-weighted, both ranks' shards summed
    assert reloaded == pytest.approx(metrics["val"]["loss/total"], rel=1e-5)
    assert metrics["val"]["samples"] == len(val)  # each sample once (no DistributedSampler padding)
    untrained = token_weighted_loss(load_model(metrics["model_path"]).eval(), val)
    assert untrained - reloaded > 0.5  # the adapter carries what was learned


def test_single_process_quick_test(small_data, tmp_path):
    out = str(tmp_path / "q")
    proc = run_cmd([PYTHON, "higgs_ds/train.py", "--quick_test", "--train_data", small_data[0],
                    "--val_data", small_data[1], "--output_dir", out])
    assert "step 4/4" in proc.stdout
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))
    assert _steps(out)["world_size"] == 1


def test_single_process_bf16_loads_the_model_in_bf16(small_data, tmp_path):
    """A bf16 DeepSpeed config loads the model in bf16 (no fp32 copy first) and trains (CPU bf16)."""
    with open("ds_configs/cpu_zero2.json") as f:
        config = {**json.load(f), "bf16": {"enabled": True}}
    (tmp_path / "bf16.json").write_text(json.dumps(config))
    out = str(tmp_path / "b")
    proc = run_cmd([PYTHON, "higgs_ds/train.py", "--quick_test", "--train_data", small_data[0], "--deepspeed",
                    str(tmp_path / "bf16.json"), "--output_dir", out, "--no_progress"])
    assert "model loaded in bfloat16" in proc.stdout and "ZeRO stage 2, bf16" in proc.stdout
    assert all(h["loss/total"] < 20 for h in _steps(out)["history"])


def test_fresh_machine_two_ranks_build_the_embedded_default(tmp_path):
    """The README's first command on an empty cache: two ranks race to build the tiny assets (file lock,
    built before the process group exists), rank 0 prepares the embedded set once (auto-prepare) and both train;
    nothing hangs. A second start reuses the prepared copy: no validation, no prepare, no audio tokenizer."""
    from higgs_ds.assets.tiny import TINY_VERSION

    def start(name, port):
        out = str(tmp_path / name)
        proc = run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", port, "higgs_ds/train.py",
                        "--deepspeed", "ds_configs/cpu_zero2.json", "--quick_test", "--output_dir", out,
                        "--no_progress"], env={"DS_ACCELERATOR": "cpu", "HIGGS_DS_CACHE": str(tmp_path / "cache")},
                       timeout=600)
        metrics = _steps(out)
        assert metrics["world_size"] == 2 and len(metrics["history"]) >= 1  # 8 samples / (2 ranks x 2) = 2 steps
        assert f"step {len(metrics['history'])}/{len(metrics['history'])}" in proc.stdout
        return proc.stdout  # run_cmd merges stderr into stdout

    first = start("fresh", "29621")
    assert os.path.isfile(str(tmp_path / "cache" / TINY_VERSION / ".complete"))
    assert first.count("preparing it once into") == 2  # train and val, by rank 0 only
    again = start("again", "29622")
    assert "preparing it once" not in again and "higgs_ds.data.validate" not in again
    assert again.count("using its prepared copy") >= 2

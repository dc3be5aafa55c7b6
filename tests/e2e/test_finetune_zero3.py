"""`--finetune audio|full` and ZeRO-3 under the deepspeed launcher on 2 CPU ranks (models/finetune.py, loss/hidden.py).

- ZeRO-3 (ds_configs/cpu_zero3.json, every parameter partitioned) gives ZeRO-2's losses, step by step, with the
  audio head and codebook embeddings trainable (`--finetune audio`): the fused loss's gathered heads get gradients.
- `--finetune audio` writes an adapter holding the audio path in full; `higgs-ds export --merge` folds it in.
- `--finetune full` under ZeRO-3 writes a full model dir that reloads to the model the run validated.
"""
import json
import os

import pytest

from tests.helpers import DEEPSPEED, PYTHON, run_cmd

pytestmark = pytest.mark.slow
PORTS = {"z2_audio": 29701, "z3_audio": 29703, "z3_full": 29705}


def _train(name, small_data, code_cache, out, finetune, ds_config, extra=()):
    run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", str(PORTS[name]), "higgs_ds/train.py",
             "--deepspeed", ds_config, "--train_data", small_data[0], "--val_data", small_data[0],
             "--code_cache_dir", code_cache, "--batch_size", "2", "--num_epochs", "10", "--max_steps", "6",
             "--learning_rate", "3e-3", "--finetune", finetune, "--output_dir", out, "--no_progress", "--seed", "1",
             *extra], env={"DS_ACCELERATOR": "cpu"}, timeout=600)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(small_data, small_code_cache, tmp_path_factory):
    best = ["--keep_best", "loss", "--eval_every", "3"]  # ZeRO-3's --keep_best gathers the partitions
    spec = {"z2_audio": ("audio", "ds_configs/cpu_zero2.json", ()),
            "z3_audio": ("audio", "ds_configs/cpu_zero3.json", ()), "z3_full": ("full", "ds_configs/cpu_zero3.json", best)}
    out = {}
    for name, (finetune, ds_config, extra) in spec.items():
        d = str(tmp_path_factory.mktemp(name))
        out[name] = (d, _train(name, small_data, small_code_cache, d, finetune, ds_config, extra))
    return out


def test_zero3_losses_equal_zero2(runs):
    (_, z2), (_, z3) = runs["z2_audio"], runs["z3_audio"]
    l2 = [h["loss/total"] for h in z2["history"]]
    l3 = [h["loss/total"] for h in z3["history"]]
    assert len(l2) == len(l3) == 6
    assert l2[-1] < l2[0] - 0.1  # it trains, so equality below says the same updates were applied
    assert l3 == pytest.approx(l2, rel=2e-4, abs=2e-4)
    assert z3["val"]["loss/total"] == pytest.approx(z2["val"]["loss/total"], rel=2e-4)


def test_audio_finetune_adapter_holds_the_audio_path_and_exports_merged(runs, tmp_path):
    from safetensors import safe_open

    from higgs_ds.models.loading import load_model

    out, metrics = runs["z2_audio"]
    assert metrics["finetune"] == "audio" and metrics["artefact"] == os.path.join(out, "adapter")
    with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
        cfg = json.load(f)
    assert {"audio_mlp", "audio_codebook_embeddings", "audio_decoder_proj.audio_lm_head"} <= set(cfg["modules_to_save"])
    with safe_open(os.path.join(out, "adapter", "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("audio_mlp" in k and "lora" not in k for k in keys) and any("lora_A" in k for k in keys)
    merged = str(tmp_path / "merged")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", out, "--output", merged, "--merge"])
    base, tuned = load_model(metrics["model_path"]), load_model(merged)
    delta = (tuned.layers[0].audio_mlp.up_proj.weight - base.layers[0].audio_mlp.up_proj.weight).abs().max()
    assert delta > 1e-4  # the audio FFN itself was trained (not only LoRA)


def test_full_finetune_under_zero3_writes_a_model_dir_that_reproduces_the_run(runs, small_data, small_code_cache,
                                                                             tiny_assets, tiny_bundle, tmp_path):
    from higgs_ds.data.code_cache import CodeCache
    from higgs_ds.data.loaders import load_dataset
    from higgs_ds.models.loading import load_model
    from tests.loss.reference_loss import token_weighted_loss

    out, metrics = runs["z3_full"]
    assert metrics["artefact"] == os.path.join(out, "model") and not os.path.exists(os.path.join(out, "adapter"))
    exported = str(tmp_path / "exported")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", out, "--output", exported])
    assert os.path.isfile(os.path.join(exported, "model.safetensors"))
    model = load_model(exported).eval()
    _, tok, audio_tok = tiny_bundle
    cache = CodeCache.for_tokenizer(tiny_assets.audio_tokenizer_path, small_code_cache)
    val = load_dataset(small_data[0], tok, audio_tok, show_progress=False, code_cache=cache)
    reloaded = token_weighted_loss(model, val)  # the run's eval: token-weighted over the whole set
    assert reloaded == pytest.approx(metrics["val"]["loss/total"], rel=1e-4)
    base = load_model(metrics["model_path"])
    assert (model.embed_tokens.weight - base.embed_tokens.weight).abs().max() > 1e-4  # every weight trained
    with open(os.path.join(out, "best", "best.json")) as f:  # --keep_best loss: a whole model, not rank 0's shards
        best = json.load(f)
    kept = token_weighted_loss(load_model(os.path.join(out, "best", "model")).eval(), val)
    assert best["step"] in (3, 6) and kept == pytest.approx(best["value"], rel=1e-4)

"""`--finetune audio|full` and ZeRO-3 under the deepspeed launcher on 2 CPU ranks (models/finetune.py, loss/hidden.py).

- ZeRO-3 (ds_configs/cpu_zero3.json, every parameter partitioned) gives ZeRO-2's losses, step by step, with the
  audio head and codebook embeddings trainable (`--finetune audio`): the fused loss's gathered heads get gradients.
- `--finetune full` under ZeRO-3 follows the same run under ZeRO-2 step by step and ends on the same weights, every
  trained group (audio head, codebook embeddings, text path) moved; stage 3 was in effect (its checkpoint layout).
- `--finetune audio` writes an adapter holding the audio path in full; `higgs-ds export --merge` folds it in and the
  merged model reproduces the adapter's outputs and the run's validation loss.
- `--finetune full` under ZeRO-3 writes a full model dir that reloads to the model the run validated.
"""
import json
import os

import pytest
import torch

from tests.helpers import DEEPSPEED, PYTHON, run_cmd

pytestmark = pytest.mark.slow
PORTS = {"z2_audio": 29701, "z3_audio": 29703, "z3_full": 29705, "z2_full": 29707}
# ZeRO-3 vs ZeRO-2, same 2 ranks, same samples, fp32: the same sums, only reduced and normed in another order
# (reduce-scatter of partitions vs one all-reduce, the clipping norm summed per partition) -> the 1e-5 of the other
# parallel tests
TOL = 1e-5


def _train(name, small_data, out, finetune, ds_config, extra=()):
    proc = run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", str(PORTS[name]), "higgs_ds/train.py",
                    "--deepspeed", ds_config, "--train_data", small_data[0], "--val_data", small_data[0],
                    "--batch_size", "2", "--num_epochs", "10", "--max_steps", "6",
                    "--learning_rate", "3e-3", "--finetune", finetune, "--output_dir", out, "--no_progress",
                    "--seed", "1", *extra], env={"DS_ACCELERATOR": "cpu"}, timeout=600)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f), proc.stdout


@pytest.fixture(scope="module")
def runs(small_data, small_dataset, tmp_path_factory):
    """{name: (output dir, metrics.json, log)}; `small_dataset`: the train file prepared once, reused by every run."""
    best = ["--keep_best", "loss", "--eval_every", "3"]  # ZeRO-3's --keep_best gathers the partitions
    full = best + ["--save_every", "6"]  # the last step's checkpoint: its layout shows the ZeRO stage
    spec = {"z2_audio": ("audio", "ds_configs/cpu_zero2.json", ()),
            "z3_audio": ("audio", "ds_configs/cpu_zero3.json", ()),
            "z3_full": ("full", "ds_configs/cpu_zero3.json", full),
            "z2_full": ("full", "ds_configs/cpu_zero2.json", full)}
    out = {}
    for name, (finetune, ds_config, extra) in spec.items():
        d = str(tmp_path_factory.mktemp(name))
        out[name] = (d, *_train(name, small_data, d, finetune, ds_config, extra))
    return out


@pytest.fixture(scope="module")
def val_set(small_dataset):
    """The runs' validation set (their train file), as they read it: its prepared copy."""
    return small_dataset


def _stage_logged(log):
    return [int(line.split("ZeRO stage ")[1][0]) for line in log.splitlines() if "DeepSpeed: ZeRO stage " in line]


def test_zero3_losses_equal_zero2(runs):
    (_, z2, log2), (_, z3, log3) = runs["z2_audio"], runs["z3_audio"]
    assert _stage_logged(log2) == [2] and _stage_logged(log3) == [3]
    l2 = [h["loss/total"] for h in z2["history"]]
    l3 = [h["loss/total"] for h in z3["history"]]
    assert len(l2) == len(l3) == 6
    assert l2[-1] < l2[0] - 0.1  # it trains, so equality below says the same updates were applied
    assert l3 == pytest.approx(l2, rel=TOL, abs=TOL)
    assert z3["val"]["loss/total"] == pytest.approx(z2["val"]["loss/total"], rel=TOL)


def _zero_layout(tag):
    """(module-state files, fp32 elements each rank's optimizer holds) of a DeepSpeed checkpoint tag."""
    files = sorted(os.listdir(tag))
    held = []
    for r in range(2):
        sd = torch.load(os.path.join(tag, f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"),
                        weights_only=False)["optimizer_state_dict"]
        flat = sd.get("fp32_flat_groups") or sd.get("single_partition_of_fp32_groups")
        held.append(sum(t.numel() for t in flat))
    return [f for f in files if f.endswith("model_states.pt")], held


def test_full_finetune_under_zero3_follows_zero2_step_by_step(runs):
    """Same losses and grad norms at every step, the same final weights, every trained group moved."""
    from higgs_ds.models.loading import load_model

    (d2, z2, log2), (d3, z3, log3) = runs["z2_full"], runs["z3_full"]
    assert _stage_logged(log2) == [2] and _stage_logged(log3) == [3]
    base = load_model(z3["model_path"])
    n = sum(p.numel() for p in base.parameters())
    # stage 3 in effect: each rank wrote its own module-state partition (no full module file) and holds about half
    # of the fp32 weights; stage 2 writes the whole module once
    files3, held3 = _zero_layout(os.path.join(d3, "checkpoints", "step6"))
    files2, _ = _zero_layout(os.path.join(d2, "checkpoints", "step6"))
    assert files3 == [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(2)], files3
    assert files2 == ["mp_rank_00_model_states.pt"], files2
    assert sum(held3) >= n and max(held3) < 0.6 * n, (held3, n)
    h2, h3 = z2["history"], z3["history"]
    assert [h["step"] for h in h3] == [h["step"] for h in h2] == list(range(1, 7))
    assert h3[-1]["loss/total"] < h3[0]["loss/total"] - 0.1  # it trains
    for a, b in zip(h2, h3):
        for key in ("loss/total", "loss/text", "loss/audio", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=TOL, abs=TOL), (a["step"], key)
    ref, got, init = (dict(m.named_parameters()) for m in (load_model(os.path.join(d2, "model")),
                                                           load_model(os.path.join(d3, "model")), base))
    for name, w in ref.items():
        scale = w.abs().max().item()
        torch.testing.assert_close(got[name], w, rtol=TOL, atol=TOL * scale, msg=name)
    moved = {name for name, w in ref.items() if (w - init[name]).abs().max() > 100 * TOL * w.abs().max()}
    for group in ("audio_decoder_proj.audio_lm_head", "audio_decoder_proj.text_lm_head", "audio_codebook_embeddings",
                  "embed_tokens", "layers.0.audio_mlp", "layers.0.self_attn", "layers.0.mlp"):
        assert any(name.startswith(group) for name in moved), group  # a gradient reached it (no weight decay)
    unmoved = sorted(set(ref) - moved)
    assert not unmoved, unmoved  # and so did every other weight


def test_audio_finetune_adapter_holds_the_audio_path_and_exports_merged(runs, val_set, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open

    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.models.loading import load_model
    from tests.loss.reference_loss import token_weighted_loss

    out, metrics, _ = runs["z2_audio"]
    assert metrics["finetune"] == "audio" and metrics["artefact"] == os.path.join(out, "adapter")
    with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
        cfg = json.load(f)
    assert {"audio_mlp", "audio_codebook_embeddings", "audio_decoder_proj.audio_lm_head"} <= set(cfg["modules_to_save"])
    with safe_open(os.path.join(out, "adapter", "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("audio_mlp" in k and "lora" not in k for k in keys) and any("lora_A" in k for k in keys)
    merged = str(tmp_path / "merged")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", out, "--output", merged, "--merge"])
    base, tuned = load_model(metrics["model_path"]), load_model(merged).eval()
    delta = (tuned.layers[0].audio_mlp.up_proj.weight - base.layers[0].audio_mlp.up_proj.weight).abs().max()
    assert delta > 1e-4  # the audio FFN itself was trained (not only LoRA)
    # the merged model reloaded: the adapter's outputs, and the run's own validation loss
    adapted = PeftModel.from_pretrained(load_model(metrics["model_path"]), os.path.join(out, "adapter")).eval()
    batch = TrainingCollator(tuned.config)([val_set[i] for i in range(2)])
    with torch.no_grad():
        want, got, untuned = adapted(**batch).audio_logits, tuned(**batch).audio_logits, base(**batch).audio_logits
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    assert (untuned - want).abs().max() > 1e-2 * scale  # the comparison can tell the adapter from its base
    assert token_weighted_loss(tuned, val_set) == pytest.approx(metrics["val"]["loss/total"], rel=1e-4)
    # the ZeRO-3 run's adapter (its partitions gathered at save) reproduces that run's validation loss too
    z3_out, z3, _ = runs["z3_audio"]
    z3_adapted = PeftModel.from_pretrained(load_model(z3["model_path"]), os.path.join(z3_out, "adapter")).eval()
    assert token_weighted_loss(z3_adapted, val_set) == pytest.approx(z3["val"]["loss/total"], rel=1e-4)


def test_full_finetune_under_zero3_writes_a_model_dir_that_reproduces_the_run(runs, val_set, tmp_path):
    from higgs_ds.models.loading import load_model
    from tests.loss.reference_loss import token_weighted_loss

    out, metrics, _ = runs["z3_full"]
    assert metrics["artefact"] == os.path.join(out, "model") and not os.path.exists(os.path.join(out, "adapter"))
    exported = str(tmp_path / "exported")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "export", "--checkpoint", out, "--output", exported])
    assert os.path.isfile(os.path.join(exported, "model.safetensors"))
    model = load_model(exported).eval()
    reloaded = token_weighted_loss(model, val_set)  # the run's eval: token-weighted over the whole set
    assert reloaded == pytest.approx(metrics["val"]["loss/total"], rel=1e-4)
    base = load_model(metrics["model_path"])
    assert (model.embed_tokens.weight - base.embed_tokens.weight).abs().max() > 1e-4  # every weight trained
    with open(os.path.join(out, "best", "best.json")) as f:  # --keep_best loss: a whole model, not rank 0's shards
        best = json.load(f)
    kept = token_weighted_loss(load_model(os.path.join(out, "best", "model")).eval(), val_set)
    assert best["step"] in (3, 6) and kept == pytest.approx(best["value"], rel=1e-4)

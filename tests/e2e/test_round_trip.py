"""The round-trip proof: train with train.py under the deepspeed launcher until the tiny model memorizes a few
samples, export a merged model, and let the official `HiggsAudioServeEngine` clone each sample's voice greedily:
the generated codes must equal the target clip's codes, frame for frame, in every codebook (100 %).
Negative control: the same pipeline with the within-clip shift removed from the loss must fail.
"""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers import DEEPSPEED, run_cmd

pytestmark = pytest.mark.slow
TRAIN_FLAGS = ["--lora_r", "32", "--lora_alpha", "32", "--modules_to_save", "audio_head", "audio_embeddings",
               "--learning_rate", "5e-3", "--warmup_ratio", "0.05"]


@pytest.fixture(scope="module")
def three_samples(tmp_path_factory):
    from higgs_ds.data.synthetic import create_sample_data

    train, _ = create_sample_data(str(tmp_path_factory.mktemp("rt")), num_samples=4, seed=11)
    return train  # 3 samples


def _clone_all(model_dir, audio_tokenizer_path, data):
    from higgs_ds.data.audio import encode_audio
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.inference.generate import clone, generated_codes, load_engine

    engine = load_engine(model_dir, audio_tokenizer_path, device="cpu")
    results = []
    for src in read_chatml(data):
        m = src.sample.messages
        resp = clone(engine, m[2].content.audio_url, m[1].content, m[3].content, max_new_tokens=256)
        want = encode_audio(engine.audio_tokenizer, m[4].content.audio_url)
        results.append((resp, generated_codes(resp), want))
    return results


def _exact(got, want):
    return got.shape == want.shape and bool(torch.equal(got, want))


@pytest.fixture(scope="module")
def trained(three_samples, tmp_path_factory):
    """train.py under the deepspeed launcher (2 CPU ranks, ZeRO-2) until the three samples are memorized."""
    out = str(tmp_path_factory.mktemp("rt_run"))
    run_cmd([DEEPSPEED, "--num_accelerators", "2", "--master_port", "29631", "higgs_ds/train.py",
             "--deepspeed", "ds_configs/cpu_zero2.json", "--train_data", three_samples, "--batch_size", "2",
             "--num_epochs", "1000", "--max_steps", "80", "--output_dir", out, "--log_every", "20", *TRAIN_FLAGS],
            env={"DS_ACCELERATOR": "cpu"})
    return out


def test_trained_model_speaks_its_targets_through_the_serve_engine(trained, three_samples, tiny_assets, tmp_path):
    from higgs_ds.inference.export import export

    diff = export(trained, str(tmp_path / "merged"), merge=True)
    assert diff < 1e-3
    results = _clone_all(str(tmp_path / "merged"), tiny_assets.audio_tokenizer_path, three_samples)
    for resp, got, want in results:
        assert resp.generated_text.startswith("<|audio_out_bos|>")
        assert _exact(got, want), f"generated {tuple(got.shape)} vs target {tuple(want.shape)}"
        # the wav decodes, has the clip's duration (960 samples per frame at 24 kHz) and plays
        path = str(tmp_path / "out.wav")
        sf.write(path, np.asarray(resp.audio, dtype=np.float32), resp.sampling_rate)
        wav, sr = sf.read(path)
        assert sr == 24000 and len(wav) == want.shape[1] * 960 and np.isfinite(wav).all() and np.abs(wav).max() > 0


def test_cli_generate_with_adapter_and_evaluate(trained, three_samples, tiny_assets, tmp_path):
    """`higgs-ds generate` with base model + --adapter clones the first sample to a wav of the target's length;
    `higgs-ds evaluate` reports the memorized set with every codebook at 100 % teacher-forced accuracy."""
    import json

    from higgs_ds.data.audio import encode_audio
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer

    cli = os.path.join(os.path.dirname(DEEPSPEED), "higgs-ds")
    m = next(iter(read_chatml(three_samples))).sample.messages
    run_cmd([cli, "generate", "--model_path", tiny_assets.model_path, "--adapter", trained,
             "--audio_tokenizer_path", tiny_assets.audio_tokenizer_path, "--ref_audio", m[2].content.audio_url,
             "--ref_text", m[1].content.text, "--text", m[3].content.text, "--output_dir", str(tmp_path / "wavs"),
             "--max_new_tokens", "256", "--device", "cpu"])
    wav, sr = sf.read(str(tmp_path / "wavs" / "0000.wav"))
    frames = encode_audio(load_audio_tokenizer(tiny_assets.audio_tokenizer_path), m[4].content.audio_url).shape[1]
    assert sr == 24000 and len(wav) == frames * 960
    run_cmd([cli, "evaluate", "--data", three_samples, "--adapter", trained, "--output", str(tmp_path / "e.json")])
    with open(tmp_path / "e.json") as f:
        result = json.load(f)
    assert result["samples"] == 3 and min(result["acc_audio_cb"]) == 1.0 and result["loss_audio"] < 0.5


def test_negative_control_without_the_within_clip_shift_fails(three_samples, tiny_assets, tmp_path, monkeypatch):
    """Identical training (in process, same steps and flags) but audio targets = the label at the same column
    (the public trainers' copy-task bug): the serve engine cannot reproduce the targets."""
    import higgs_ds.data.alignment as alignment
    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.data.training_set import open_training_set
    from higgs_ds.inference.export import export
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.loading import ModelPaths, load_all
    from higgs_ds.models.lora import apply_lora

    monkeypatch.setattr(alignment, "audio_targets", lambda labels, starts: labels.clone())  # no shift
    torch.manual_seed(0)
    paths = ModelPaths.resolve(tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    model, tok, audio_tok = load_all(paths)
    model = apply_lora(model, r=32, alpha=32, modules_to_save=["audio_head", "audio_embeddings"])
    ds = open_training_set(three_samples, tok, tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    batch = TrainingCollator(model.config)([ds[i] for i in range(len(ds))])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(80):
        out = compute_loss(model, batch, LossConfig())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.metrics["loss/audio"]) < 0.1  # the copy task is learned perfectly ...
    model.save_pretrained(str(tmp_path / "adapter"))
    export(str(tmp_path / "adapter"), str(tmp_path / "merged"), merge=True)
    results = _clone_all(str(tmp_path / "merged"), tiny_assets.audio_tokenizer_path, three_samples)
    assert not any(_exact(got, want) for _, got, want in results)  # ... and the model cannot speak

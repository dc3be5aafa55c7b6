"""The Whisper audio-tower path on a tiny tower model (`ensure_tiny_tower_assets`): the processor comes from a
local dir with clear errors, only user/system audio reaches Whisper, the collated batch of prepared data is the one
boson's own pieces build from the ChatML and the serve engine's, and a LoRA training step runs through the tower."""
import json
import os
from unittest import mock

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from higgs_ds.errors import DataError


@pytest.fixture(scope="module")
def tower():
    from higgs_ds.assets.tiny import ensure_tiny_tower_assets

    return ensure_tiny_tower_assets()


@pytest.fixture(scope="module")
def tower_bundle(tower, tiny_bundle):
    """(model, text tokenizer, audio tokenizer, WhisperProcessor); the tower dir shares the tiny tokenizers."""
    from higgs_ds.models.loading import load_model, load_whisper_processor

    _, tok, audio_tok = tiny_bundle
    model = load_model(tower.model_path)
    model.set_audio_special_tokens(tok)
    return model, tok, audio_tok, load_whisper_processor(tower.model_path, tower.whisper_processor_path)


def _user_audio_sample(row):
    """The reference clip moved into a user turn (audio-in, `<|AUDIO|>`) ahead of the target text."""
    m = row["messages"]
    user = {"role": "user", "content": [{"type": "audio", "audio_url": m[2]["content"]["audio_url"]},
                                        {"type": "text", "text": m[1]["content"]}]}
    return {"messages": [m[0], user, m[3], m[4]], "start_index": 3}


@pytest.fixture(scope="module")
def tower_data(tmp_path_factory):
    """data.jsonl: [user-audio sample, five-message voice-cloning sample], both on the same two short clips."""
    from higgs_ds.data.synthetic import create_sample_data

    root = tmp_path_factory.mktemp("tower_data")
    train, _ = create_sample_data(str(root), num_samples=2, seed=11, min_seconds=0.3, max_seconds=0.5)
    row = json.loads(open(train).readline())
    for msg in row["messages"]:  # absolute audio paths, so that derived files may live anywhere
        if isinstance(msg["content"], dict):
            msg["content"]["audio_url"] = os.path.join(str(root), msg["content"]["audio_url"])
    path = root / "data.jsonl"
    path.write_text(json.dumps(_user_audio_sample(row)) + "\n" + json.dumps(row) + "\n")
    return str(path), row


@pytest.fixture(scope="module")
def tower_dataset(tower, tower_bundle, tower_data):
    """tower_data through the one data path: prepared with the audio-in checks, waveforms loaded per item."""
    from higgs_ds.data.training_set import open_training_set

    _, tok, _, processor = tower_bundle
    return open_training_set(tower_data[0], tok, tok.name_or_path, tower.audio_tokenizer_path,
                             whisper_processor=processor)


def test_processor_path_is_required_and_checked(tower, tiny_assets, tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    from higgs_ds.models.loading import load_whisper_processor

    assert load_whisper_processor(tiny_assets.model_path, None) is None  # the release config: no Whisper
    with pytest.raises(ValueError, match="encode_whisper_embed true .* pass --whisper_processor_path"):
        load_whisper_processor(tower.model_path, None)
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        load_whisper_processor(tower.model_path, str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a WhisperProcessor dir"):
        load_whisper_processor(tower.model_path, str(tmp_path))
    wrong = tmp_path / "wrong"  # 80 mel bins (whisper-small style) for a 128-bin tower
    good = WhisperProcessor.from_pretrained(tower.whisper_processor_path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), good.tokenizer).save_pretrained(str(wrong))
    with pytest.raises(ValueError, match="80 mel bins x 3000 frames, but the audio tower .* takes 128 x 3000"):
        load_whisper_processor(tower.model_path, str(wrong))


def _whisper_reference(processor, path):
    """Whisper features of one clip computed by hand the way boson's collator does: the serve engine's load
    (librosa at 24 kHz), resampled to the processor's rate, padded to 30 s."""
    fe = processor.feature_extractor
    wav = librosa.resample(librosa.load(path, sr=24000)[0], orig_sr=24000, target_sr=fe.sampling_rate)
    ref = fe([wav], sampling_rate=fe.sampling_rate, return_attention_mask=True, padding="max_length")
    return torch.from_numpy(ref["input_features"]), torch.from_numpy(ref["attention_mask"])


def test_only_user_audio_reaches_whisper(tower_dataset, tower_bundle, tower_data):
    from higgs_ds.data.collate import TrainingCollator

    model, _, _, processor = tower_bundle
    ref_clip = tower_data[1]["messages"][2]["content"]["audio_url"]
    assert [tower_dataset.row(i, "audio_in") for i in range(2)] == [[ref_clip], []]  # sample 2's reference: codes
    batch = TrainingCollator(model.config, processor)([tower_dataset[0], tower_dataset[1]])
    features, mask = _whisper_reference(processor, ref_clip)
    assert batch["audio_features"].shape == (1, 128, 3000) and mask.sum() < 3000
    assert torch.equal(batch["audio_features"], features)
    assert torch.equal(batch["audio_feature_attention_mask"], mask)
    alone = TrainingCollator(model.config, processor)([tower_dataset[1]])  # no user audio: nothing for Whisper
    assert alone["audio_features"].shape == (0, 128, 3000)


def _bosons_own_batch(config, processor, samples):
    """boson's `HiggsAudioSampleCollator` built with the serve engine's arguments (serve_engine.py, 0.1.1)."""
    from dataclasses import fields

    from boson_multimodal.data_collator.higgs_audio_collator import HiggsAudioSampleCollator

    out = HiggsAudioSampleCollator(
        whisper_processor=processor, encode_whisper_embed=config.encode_whisper_embed,
        audio_in_token_id=config.audio_in_token_idx, audio_out_token_id=config.audio_out_token_idx,
        audio_stream_bos_id=config.audio_stream_bos_id, audio_stream_eos_id=config.audio_stream_eos_id,
        pad_token_id=config.pad_token_id, return_audio_in_tokens=False, use_delay_pattern=config.use_delay_pattern,
        audio_num_codebooks=config.audio_num_codebooks, round_to=1)(samples)
    return {f.name: getattr(out, f.name) for f in fields(out) if f.name != "reward" and getattr(out, f.name) is not None}


def test_prepared_tower_batch_equals_bosons_own_on_the_chatml(tower, tower_bundle, tower_data, tmp_path):
    """`higgs-ds prepare --whisper_audio`, opened for the tower model: the collated batch (Whisper features included)
    is what boson's `prepare_chatml_sample`, the serve engine's codes and boson's collator build from the ChatML; a
    dir prepared without the audio-in checks is refused for the tower."""
    from higgs_ds.cli import main
    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.data.open_prepared import open_prepared
    from tests.data.reference_samples import ReferenceDataset

    model, tok, audio_tok, processor = tower_bundle
    flags = ["--tokenizer_path", tok.name_or_path, "--audio_tokenizer_path", tower.audio_tokenizer_path]
    tower_dir, plain_dir = str(tmp_path / "tower"), str(tmp_path / "plain")
    assert main(["prepare", "--data", tower_data[0], "--output", tower_dir, "--whisper_audio"] + flags) == 0
    ds = open_prepared(tower_dir, tok, tower.audio_tokenizer_path, whisper_processor=processor)
    reference = ReferenceDataset(tower_data[0], tok, audio_tok, processor)
    assert [s.where for s in reference.samples] == [s.where for s in ds.samples]
    ours = TrainingCollator(model.config, processor)([ds[0], ds[1]])
    theirs = _bosons_own_batch(model.config, processor, [reference[0], reference[1]])
    assert ours.keys() == theirs.keys() and ours["audio_features"].shape[0] == 1
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), k
    assert main(["prepare", "--data", tower_data[0], "--output", plain_dir] + flags) == 0
    with pytest.raises(DataError, match="prepared without the audio-in checks .* --whisper_audio"):
        open_prepared(plain_dir, tok, tower.audio_tokenizer_path, whisper_processor=processor)


def test_whisper_inputs_the_collator_would_misalign_are_rejected(tower, tower_bundle, tower_data, tmp_path):
    from higgs_ds.data.training_set import open_training_set

    _, tok, _, processor = tower_bundle
    m = tower_data[1]["messages"]
    late = {"messages": m[:3] + [{"role": "user", "content": [{"type": "text", "text": m[3]["content"]},
                                                             m[2]["content"]]}, m[4]],
            "start_index": 4}  # user audio after assistant audio
    long_wav = str(tmp_path / "long.wav")
    sf.write(long_wav, np.zeros(31 * 24000, dtype=np.float32), 24000)
    too_long = _user_audio_sample({"messages": m[:2] + [{"role": "assistant", "content": {
        "type": "audio", "audio_url": long_wav}}] + m[3:]})
    for bad, message in ((late, "after assistant audio"), (too_long, "lasts 31.0 s")):
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=f"bad.jsonl:1.*{message}"):
            open_training_set(str(path), tok, tok.name_or_path, tower.audio_tokenizer_path,
                              whisper_processor=processor)


def _serve_engine(assets, processor_path=None):
    """The official engine on CPU; its hub fetch of openai/whisper-large-v3-turbo goes to the local dir."""
    from boson_multimodal.serve import serve_engine as se
    from transformers import WhisperProcessor

    from higgs_ds.inference.generate import serve_engine

    local = lambda *a, **k: WhisperProcessor.from_pretrained(processor_path)  # noqa: E731
    with mock.patch.object(se.AutoProcessor, "from_pretrained", local):
        return serve_engine(assets.model_path, assets.audio_tokenizer_path, device="cpu", kv_cache_lengths=(64,))


def _assert_batch_is_the_engines(ours, served):
    """Equal tensors; the engine's input_ids add the assistant header after ours, and it has no labels."""
    n = ours["input_ids"].shape[1]
    assert torch.equal(served["input_ids"][:, :n], ours["input_ids"])
    assert torch.equal(served["attention_mask"][:, :n], ours["attention_mask"])
    keys = {k for k, v in served.items() if torch.is_tensor(v) and k not in ("input_ids", "attention_mask", "reward")}
    assert keys == {k for k in ours if not k.startswith("label") and k not in ("input_ids", "attention_mask")}
    for k in keys:
        assert served[k].dtype == ours[k].dtype and torch.equal(served[k].cpu(), ours[k]), k


@pytest.mark.slow  # ~40 s on a loaded 2-core machine: builds two serve engines
@pytest.mark.parametrize("kind", ["no_tower", "tower"])
def test_collated_batch_is_the_serve_engines(kind, request):
    """The engine's own `_prepare_inputs` + collator give our tensors for the same five-message sample; with
    user audio (which the engine cannot prepare in 0.1.1: it passes no waveforms) its collator gives ours."""
    from dataclasses import asdict, replace

    from higgs_ds.data.collate import TrainingCollator

    if kind == "tower":
        assets, dataset = request.getfixturevalue("tower"), request.getfixturevalue("tower_dataset")
        engine, cloning = _serve_engine(assets, assets.whisper_processor_path), 1
    else:
        assets, dataset = request.getfixturevalue("tiny_assets"), request.getfixturevalue("small_dataset")
        engine, cloning = _serve_engine(assets), 0
    ours = TrainingCollator(engine.model.config, dataset.whisper_processor)
    _assert_batch_is_the_engines(ours([dataset[cloning]]), engine._prepare_inputs(dataset.samples[cloning].sample))
    if kind == "tower":
        with pytest.raises(TypeError):  # get_wv on the engine's audio_waveforms_concat=None
            engine._prepare_inputs(dataset.samples[0].sample)
        served = asdict(engine.collator([replace(dataset[0], label_ids=None)]))
        batch = ours([dataset[0]])
        assert batch["audio_features"].shape[0] == 1
        _assert_batch_is_the_engines(batch, served)


def test_lora_step_through_the_tower(tower, tower_dataset, tower_bundle):
    """Loss finite; every LoRA B matrix gets a non-zero gradient; the frozen Whisper tower gets no adapters."""
    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.loading import load_model
    from higgs_ds.models.lora import apply_lora

    torch.manual_seed(0)
    model = apply_lora(load_model(tower.model_path), r=4, alpha=8)
    batch = TrainingCollator(model.config, tower_bundle[3])([tower_dataset[0], tower_dataset[1]])
    out = compute_loss(model, batch, LossConfig())
    out.loss.backward()
    assert torch.isfinite(out.loss) and float(out.metrics["loss/audio"]) > 0
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert not any("audio_tower" in n for n in grads) and any("audio_mlp" in n for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


def test_workers_give_the_same_tower_batches(tower_dataset, tower_bundle):
    """Waveform loading and Whisper features in DataLoader workers: the batches of a 0-worker loader."""
    from higgs_ds.data.loaders import build_loader, start_epoch

    model = tower_bundle[0]
    runs = []
    for workers in (0, 2):
        loader = build_loader(tower_dataset, model.config, 1, 0, 1, seed=3, num_workers=workers)
        start_epoch(loader, 1)
        runs.append(list(loader))
    assert len(runs[0]) == 2 and sum(b["audio_features"].shape[0] for b in runs[0]) == 1
    for a, b in zip(*runs):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # ~40 s: one train.py process
def test_train_py_with_the_tower(tower, tower_data, tmp_path):
    from tests.helpers import PYTHON, run_cmd

    base = [PYTHON, "higgs_ds/train.py", "--model_path", tower.model_path, "--train_data", tower_data[0],
            "--max_steps", "2", "--batch_size", "1", "--output_dir", str(tmp_path / "run"), "--no_progress"]
    with pytest.raises(AssertionError, match="pass --whisper_processor_path") as err:
        run_cmd(base)
    assert "loading samples" not in str(err.value)  # failed before the data and the model were loaded
    run_cmd(base + ["--whisper_processor_path", tower.whisper_processor_path, "--num_workers", "2"])
    with open(tmp_path / "run" / "metrics.json") as f:
        history = json.load(f)["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss/total"]) for h in history)

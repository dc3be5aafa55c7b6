"""Our native layout against transformers 5 itself, run in isolation: a subprocess with the pinned transformers 5
install (requirements/transformers5.txt, in <venv>/transformers5 by setup_venv.sh) first on its path, reusing the
venv's torch. Logits of HiggsAudioV2ForConditionalGeneration are compared with boson's HiggsAudioModel's."""
import json
import os
import subprocess
import sys

import pytest
import torch

from higgs_ds.commands.convert import convert_dir
from higgs_ds.models import convert
from tests.helpers import ROOT  # noqa: E402

T5 = os.environ.get("HIGGS_DS_TRANSFORMERS5") or os.path.join(sys.prefix, "transformers5")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(T5, "transformers")),
                                reason=f"no isolated transformers 5 at {T5} (scripts/setup_venv.sh installs it)")
ATOL = 2e-5


def t5(*args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "models", "native_t5.py"), *map(str, args)],
                          env={**env, "PYTHONPATH": T5, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def equivalent_inputs(config, n_text=20, n_audio=10, seed=0):
    """One clip in both layouts: boson (one <|AUDIO_OUT|> + codes (8, N)) and native (N placeholders + (1, N, 8))."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 256, (n_text,), generator=g).tolist()
    codes = torch.randint(0, config.audio_codebook_size + 2, (config.audio_num_codebooks, n_audio), generator=g)
    bos, out, eos = config.audio_out_bos_token_id, config.audio_out_token_idx, config.audio_eos_token_id
    ids = torch.tensor([text + [bos, out, eos]])
    boson = dict(input_ids=ids, attention_mask=torch.ones_like(ids), audio_out_ids=codes,
                 audio_out_ids_start=torch.tensor([0]), audio_out_ids_start_group_loc=torch.tensor([0]))
    native = dict(input_ids=torch.tensor([text + [bos] + [out] * n_audio + [eos]]), audio_input_ids=codes.T[None],
                  audio_input_ids_mask=torch.ones(1, n_audio, dtype=torch.bool))
    return boson, native


@torch.no_grad()
def boson_logits(model, batch):
    """(text logits over the native sequence's positions, audio logits (N, 8, 1026)) of a boson model."""
    out = model(**batch)
    keep = out.attention_mask[0].bool()  # boson left-pads the expanded sequence
    return out.logits[0, keep], out.audio_logits


def native_logits(tmp_path, model_dir, native_batch, adapter=None):
    torch.save(native_batch, tmp_path / "inputs.pt")
    t5("run", model_dir, tmp_path / "inputs.pt", tmp_path / "out.pt", *([adapter] if adapter else []))
    out = torch.load(tmp_path / "out.pt")
    assert out["version"].startswith("5.") and out["class"] == "HiggsAudioV2ForConditionalGeneration"
    mask = native_batch["input_ids"][0] == native_batch["input_ids"][0, -2]  # the audio placeholders
    audio = out["audio"][0, mask].reshape(int(mask.sum()), native_batch["audio_input_ids"].shape[-1], -1)
    return out["text"][0], audio


def assert_same_logits(boson, native):
    (bt, ba), (nt, na) = boson, native
    assert bt.shape == nt.shape and ba.shape == na.shape
    assert (bt - nt).abs().max().item() < ATOL and (ba - na).abs().max().item() < ATOL
    assert torch.equal(ba.argmax(-1), na.argmax(-1))


def test_our_native_export_of_the_tiny_model_runs_in_transformers5(tiny_assets, tmp_path):
    from higgs_ds.models.loading import load_model

    native = str(tmp_path / "native")
    convert_dir(tiny_assets.model_path, native, "native")
    model = load_model(tiny_assets.model_path).eval()
    boson_batch, native_batch = equivalent_inputs(model.config)
    assert_same_logits(boson_logits(model, boson_batch), native_logits(tmp_path, native, native_batch))


@pytest.mark.slow
def test_native_checkpoint_trains_exports_back_and_loads_in_transformers5(tiny_assets, small_data, small_code_cache,
                                                                          tmp_path):
    """A tiny checkpoint made by transformers 5 -> (converted at load) trained 4 steps by train.py -> exported with
    --format transformers -> in transformers 5, the merged model and base + re-keyed adapter (peft) give our logits."""
    from higgs_ds.cli import main
    from higgs_ds.inference.export import find_adapter, load_lora_model
    from higgs_ds.models import lm_format
    from tests.helpers import PYTHON, run_cmd

    native, run, out = tmp_path / "native", tmp_path / "run", tmp_path / "export"
    config = lm_format.config_to_native(convert.read_json(os.path.join(tiny_assets.model_path, "config.json")),
                                        convert.special_ids(tiny_assets.model_path))
    convert.write_json(config, tmp_path / "native_config.json")
    t5("make", native, tmp_path / "native_config.json")
    assert convert.model_format(str(native)) == "native" and not os.path.exists(native / "tokenizer.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):  # its text tokenizer
        os.link(os.path.join(tiny_assets.model_path, name), native / name)
    run_cmd([PYTHON, "higgs_ds/train.py", "--quick_test", "--model_path", str(native), "--audio_tokenizer_path",
             tiny_assets.audio_tokenizer_path, "--train_data", small_data[0], "--val_data", small_data[1],
             "--code_cache_dir", small_code_cache, "--output_dir", str(run), "--learning_rate", "1e-2",
             "--modules_to_save", "audio_head", "text_head", "--no_progress"])
    assert main(["export", "--checkpoint", str(run), "--output", str(out), "--format", "transformers"]) == 0

    lora, base_dir = load_lora_model(find_adapter(str(run)))
    assert base_dir.startswith(convert.converted_cache_root())  # trained on the one-time boson conversion
    boson_batch, native_batch = equivalent_inputs(lora.config)
    ours = boson_logits(lora, boson_batch)
    with lora.disable_adapter():
        untrained = boson_logits(lora, boson_batch)
    assert (ours[1] - untrained[1]).abs().max() > 1e-2  # training moved the model: the comparison means something
    for got in (native_logits(tmp_path, out, native_batch),  # merged, native layout
                native_logits(tmp_path, native, native_batch, adapter=out / "adapter")):  # native base + adapter
        (bt, ba), (nt, na) = ours, got
        assert (bt - nt).abs().max() < 1e-4 and (ba - na).abs().max() < 1e-4
    with open(out / "adapter" / "adapter_config.json") as f:
        adapter = json.load(f)
    assert adapter["base_model_name_or_path"] == str(native)
    assert adapter["modules_to_save"] == ["audio_lm_head", "text_lm_head"]
    card = (out / "README.md").read_text()
    assert f"(converted from the transformers-native `{native}`)" in card
    assert "library_name: transformers" in card and "| optimizer steps | 4 |" in card
    assert f"`train` (`{small_data[0]}`): 8 samples (0 rejected)" in card and "| learning_rate | 0.01 |" in card
    with open(run / "metrics.json") as f:
        metrics = json.load(f)
    assert f"| train loss/total | {round(metrics['history'][-1]['loss/total'], 4)} |" in card
    assert f"| val loss/total | {round(metrics['val']['loss/total'], 4)} |" in card
    assert "modules_to_save=['audio_lm_head', 'text_lm_head']" in card


def test_our_native_audio_tokenizer_encodes_the_same_in_transformers5(tiny_assets, tmp_path):
    """Every weight fits HiggsAudioV2TokenizerModel (no missing/unexpected keys) and its codes are boson's."""
    import numpy as np

    from higgs_ds.data.synthetic import speech_like
    from higgs_ds.models.audio_tokenizer import load_audio_tokenizer

    native = str(tmp_path / "tk")
    convert_dir(tiny_assets.audio_tokenizer_path, native, "native", audio_tokenizer=True)
    wav = speech_like(np.random.default_rng(1), 1.2).astype(np.float32)
    torch.save(torch.from_numpy(wav)[None, None], tmp_path / "wav.pt")
    t5("encode", native, tmp_path / "wav.pt", tmp_path / "codes.pt")
    ours = load_audio_tokenizer(tiny_assets.audio_tokenizer_path).encode(wav, sr=24000)
    theirs = torch.load(tmp_path / "codes.pt")["codes"][0]
    assert theirs.shape == ours.shape == (8, 30) and torch.equal(theirs, ours)


def test_text_tokenizer_crosses_both_ways(tiny_assets, tmp_path):
    """Our (transformers 4) tokenizer files load in transformers 5; its save_pretrained output (tokenizer_class
    TokenizersBackend) loads here after the conversion's copy; both give the same ids."""
    from higgs_ds.models.convert import copy_tokenizer
    from higgs_ds.models.loading import load_text_tokenizer

    text = "<|audio_out_bos|>Hello there.<|AUDIO_OUT|><|audio_eos|><|eot_id|>"
    t5("tokenizer", tiny_assets.model_path, text, tmp_path / "ids.pt", tmp_path / "saved5")
    ours = load_text_tokenizer(tiny_assets.model_path)
    theirs = torch.load(tmp_path / "ids.pt")
    assert theirs["ids"] == ours(text).input_ids and theirs["audio_out"] == ours.convert_tokens_to_ids("<|AUDIO_OUT|>")
    (tmp_path / "back").mkdir()
    copy_tokenizer(str(tmp_path / "saved5"), str(tmp_path / "back"), to_boson=True)
    assert load_text_tokenizer(str(tmp_path / "back"))(text).input_ids == ours(text).input_ids

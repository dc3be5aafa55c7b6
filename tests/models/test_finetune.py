"""`--finetune` trainable sets (models/finetune.py), on the meta device: what each mode trains and what it freezes."""
import json
import os

import pytest
import torch

from higgs_ds.models.finetune import MODES, artefact_dir, prepare_model


def _model(tiny_assets):
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    with open(os.path.join(tiny_assets.model_path, "config.json")) as f:
        cfg = json.load(f)
    with torch.device("meta"):
        return HiggsAudioModel(HiggsAudioConfig(**cfg))


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_audio_mode_trains_the_audio_path_in_full_and_lora_on_the_text_path(tiny_assets):
    names = _trainable(prepare_model(_model(tiny_assets), "audio", r=4))
    full = [n for n in names if "modules_to_save" in n]
    for part in ("audio_mlp.modules_to_save.default.gate_proj", "audio_input_layernorm.modules_to_save",
                 "audio_post_attention_layernorm.modules_to_save", "audio_lm_head.modules_to_save",
                 "audio_codebook_embeddings.modules_to_save"):
        assert any(part in n for n in full), part
    assert any("self_attn.q_proj.lora_A" in n for n in names) and any(".mlp.up_proj.lora_B" in n for n in names)
    assert not any("audio_mlp" in n and "lora_" in n for n in names)  # the audio FFN is trained in full, not by LoRA
    assert not any("text_lm_head" in n or "embed_tokens" in n for n in names)
    assert not any(n.endswith("self_attn.q_proj.base_layer.weight") for n in names)


def test_full_mode_trains_every_weight_and_lora_mode_only_adapters(tiny_assets):
    full = prepare_model(_model(tiny_assets), "full")
    assert _trainable(full) == {n for n, _ in full.named_parameters()} and not hasattr(full, "peft_config")
    lora = _trainable(prepare_model(_model(tiny_assets), "lora", r=4))
    assert lora and all("lora_" in n for n in lora)


def test_artefacts_and_bad_mode(tmp_path):
    assert artefact_dir("o", "full") == os.path.join("o", "model")
    assert {artefact_dir("o", m) for m in MODES if m != "full"} == {os.path.join("o", "adapter")}
    with pytest.raises(ValueError, match="--finetune"):
        prepare_model(torch.nn.Linear(2, 2), "everything")

"""The sync-free training forward (models/training_forward.py + data/index_plan.py) equals boson's forward.

Batches: padded rows of different lengths with two clips each (reference + target), a row without any audio, and
one single-row batch (boson left-pads a lone row). Models: the tiny default (LoRA) and a mid-size config with a
fast-forward layer between dual-FFN layers (every weight trainable). Compared: the final hidden states at every
position, logits at labeled positions against boson's full `logits`/`audio_logits`, the loss and the gradients,
with and without activation checkpointing.
"""
import copy
import dataclasses

import pytest
import torch

from higgs_ds.data.collate import TrainingCollator
from higgs_ds.loss import LossConfig, compute_loss, hidden_states_only
from higgs_ds.models import training_forward
from higgs_ds.models.training_forward import INDEX_PLAN_KEY, final_hidden_states


def _text_only(sample, config):
    """The sample with its audio placeholders and clips removed: a row without audio."""
    keep = (sample.input_ids != config.audio_out_token_idx) & (sample.input_ids != config.audio_in_token_idx)
    k = sample.audio_ids_concat.shape[0]
    empty = torch.zeros(0, dtype=torch.long)
    return dataclasses.replace(
        sample, input_ids=sample.input_ids[keep], label_ids=sample.label_ids[keep],
        audio_ids_concat=torch.zeros(k, 0, dtype=torch.long), audio_ids_start=empty,
        audio_waveforms_concat=torch.zeros(0), audio_waveforms_start=empty, audio_sample_rate=torch.zeros(0),
        audio_speaker_indices=empty,
        audio_label_ids_concat=None if sample.audio_label_ids_concat is None else torch.zeros(k, 0, dtype=torch.long))


def _batches(config, dataset):
    collate = TrainingCollator(config, index_plan=True)
    return {"padded_clips": collate([dataset[i] for i in range(3)]),
            "row_without_audio": collate([dataset[3], _text_only(dataset[4], config), dataset[5]]),
            "single_row": collate([dataset[6]])}


def _mid_model(tiny_config):
    """Wider and deeper than the tiny one; layer 2 is a fast-forward (text-only) layer."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel

    cfg = HiggsAudioConfig(**{**tiny_config.to_dict(), "audio_dual_ffn_layers": [0, 1, 3], "hidden_size": 192})
    cfg.text_config.update(dict(hidden_size=192, intermediate_size=384, num_hidden_layers=4,
                                num_attention_heads=6, num_key_value_heads=2, head_dim=32))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(3)
    return HiggsAudioModel(cfg).train()


def _lora_model(model):
    from higgs_ds.models.lora import apply_lora

    model = apply_lora(model, r=4, alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B so that every LoRA weight has a gradient
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model.train()


def _without_plan(batch):
    return {k: v for k, v in batch.items() if k != INDEX_PLAN_KEY}


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = compute_loss(model, batch, LossConfig())
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(model, batch):
    ref, ref_grads = _loss_and_grads(model, _without_plan(batch))
    ours, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(ours.loss, ref.loss)
    for k in ref.metrics:
        torch.testing.assert_close(ours.metrics[k].float(), ref.metrics[k].float(), msg=k)
    assert ref_grads.keys() == grads.keys() and len(grads) > 0
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)
    return ref_grads


@pytest.fixture(scope="module")
def tiny_config(tiny_bundle):
    return tiny_bundle[0].config


def test_plan_reproduces_boson_merge(tiny_config, small_dataset, fresh_model):
    """The plan's masks, labels and ids are those of boson's merge in the forward; the hidden states are equal."""
    for name, batch in _batches(tiny_config, small_dataset).items():
        plan = batch[INDEX_PLAN_KEY]
        with torch.no_grad():
            with hidden_states_only(fresh_model):
                ref = fresh_model(**_without_plan(batch))
            ours = final_hidden_states(fresh_model, batch)
        for field in ("expanded_labels", "audio_out_mask", "expanded_input_ids", "attention_mask",
                      "audio_in_discrete_codes_mask"):
            assert torch.equal(getattr(ours, field), getattr(ref, field)), (name, field)
        assert torch.equal(ours.logits, ref.logits), name  # final normed hidden states, every position
        assert plan.has_padding == bool((ref.attention_mask == 0).any())  # a lone row is left-padded to 8


def test_logits_at_labeled_positions_match_boson(tiny_config, small_dataset, fresh_model):
    batch = _batches(tiny_config, small_dataset)["padded_clips"]
    plan = batch[INDEX_PLAN_KEY]
    proj = fresh_model.audio_decoder_proj
    with torch.no_grad():
        ref = fresh_model(**_without_plan(batch))
        hidden = final_hidden_states(fresh_model, batch).logits.reshape(-1, tiny_config.hidden_size)
    assert plan.text_pos.numel() > 0 and plan.audio_pos.numel() > 0
    torch.testing.assert_close(hidden[plan.text_pos] @ proj.text_lm_head.weight.T,
                               ref.logits.reshape(hidden.shape[0], -1)[plan.text_pos])
    audio_ref = ref.audio_logits.reshape(ref.audio_logits.shape[0], -1)  # rows: audio-out positions in order
    audio_row = ref.audio_out_mask.reshape(-1).long().cumsum(0) - 1
    torch.testing.assert_close((hidden[plan.audio_pos] @ proj.audio_lm_head.weight.T).float(),
                               audio_ref[audio_row[plan.audio_pos]])


@pytest.mark.parametrize("which", ["padded_clips", "row_without_audio", "single_row"])
def test_lora_loss_and_gradients_match_boson_tiny(tiny_config, small_dataset, fresh_model, which):
    model = _lora_model(fresh_model)
    _assert_same_step(model, _batches(tiny_config, small_dataset)[which])


def test_full_gradients_match_boson_mid_size(tiny_config, small_dataset):
    model = _mid_model(tiny_config)
    for batch in _batches(model.config, small_dataset).values():
        grads = _assert_same_step(model, batch)
        assert any("audio_codebook_embeddings" in n for n in grads) and any("embed_tokens" in n for n in grads)


def test_activation_checkpointing_keeps_the_plan(tiny_config, small_dataset, fresh_model, monkeypatch):
    """Recomputed layers run the planned path in the backward too (else checkpoint's recompute check would fail)."""
    from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing

    model = _lora_model(fresh_model)
    batch = _batches(tiny_config, small_dataset)["padded_clips"]
    _, ref_grads = _loss_and_grads(model, _without_plan(batch))
    ckpt = copy.deepcopy(model)
    enable_activation_checkpointing(ckpt, "all")
    calls = []
    planned = training_forward._planned_layer
    monkeypatch.setattr(training_forward, "_planned_layer", lambda *a: calls.append(1) or planned(*a))
    _, grads = _loss_and_grads(ckpt, batch)
    n_layers = tiny_config.text_config.num_hidden_layers
    assert len(calls) == 2 * n_layers  # forward + recompute, each through the plan
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


def test_plan_travels_with_the_batch(tiny_config, small_dataset):
    """`to_device` moves the plan; a DataLoader's pin-memory step keeps it a plan; no plan without the option."""
    from higgs_ds.data.index_plan import IndexPlan
    from higgs_ds.data.loaders import to_device

    batch = _batches(tiny_config, small_dataset)["padded_clips"]
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved[INDEX_PLAN_KEY], IndexPlan) and torch.equal(moved[INDEX_PLAN_KEY].source, batch[INDEX_PLAN_KEY].source)
    assert INDEX_PLAN_KEY not in TrainingCollator(tiny_config)([small_dataset[0]])


def test_no_audio_labels_fault_updates_the_plan(tiny_config, small_dataset, fresh_model, monkeypatch):
    """engine/faults.py's `no_audio_labels` drops the plan's audio rows too: same loss as boson's path."""
    from higgs_ds.engine.faults import unlabel_audio

    monkeypatch.setenv("HIGGS_DS_FAULT", "no_audio_labels@1")
    batch = unlabel_audio(_batches(tiny_config, small_dataset)["padded_clips"], 1)
    with torch.no_grad():
        ours = compute_loss(fresh_model, batch, LossConfig())
        ref = compute_loss(fresh_model, _without_plan(batch), LossConfig())
    assert int(ours.metrics["tokens/audio"]) == int(ref.metrics["tokens/audio"]) == 0
    torch.testing.assert_close(ours.loss, ref.loss)


def test_planned_layers_run_instead_of_bosons(tiny_config, small_dataset, monkeypatch):
    """With a plan every dual-FFN layer runs `_planned_layer`, never boson's layer forward (boolean indexing: host
    syncs); the fast-forward layer indexes nothing and runs as boson's module. Without a plan: boson's throughout."""
    from boson_multimodal.model.higgs_audio.modeling_higgs_audio import HiggsAudioDualFFNDecoderLayer

    model = _mid_model(tiny_config)
    batch = _batches(model.config, small_dataset)["padded_clips"]
    boson, planned = [], []
    boson_forward, planned_layer = HiggsAudioDualFFNDecoderLayer.forward, training_forward._planned_layer
    monkeypatch.setattr(HiggsAudioDualFFNDecoderLayer, "forward",
                        lambda self, *a, **kw: boson.append(self.layer_idx) or boson_forward(self, *a, **kw))
    monkeypatch.setattr(training_forward, "_planned_layer",
                        lambda layer, *a: planned.append(layer.layer_idx) or planned_layer(layer, *a))
    compute_loss(model, batch, LossConfig()).loss.backward()
    assert planned == [0, 1, 3] and boson == [2]  # layer 2 is the fast-forward one
    boson.clear()
    compute_loss(model, _without_plan(batch), LossConfig())
    assert planned == [0, 1, 3] and boson == [0, 1, 2, 3]

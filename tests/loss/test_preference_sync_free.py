"""The DPO step on a pair batch with its `IndexPlan` (data/index_plan.py) equals the same step through boson's forward: loss,
every `pref/*` metric and every gradient, with the adapter-disabled reference (LoRA) and a stored one (every weight
trainable); the planned step runs our forward's planned layers, never boson's dual-FFN forward. bench/syncs.py
counts its host syncs (tests/tools/test_syncs_bench.py: 0)."""
import pytest
import torch

from higgs_ds.loss.preference import PreferenceConfig, preference_loss
from higgs_ds.models import training_forward
from higgs_ds.models.training_forward import INDEX_PLAN_KEY
from tests.loss.test_fused_loss import make_config
from tests.loss.test_preference_loss import base_model, lora_model, pair_batch


def _step(model, batch, config, reference):
    model.zero_grad(set_to_none=True)
    out = preference_loss(model, batch, config, reference)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, planned, config, reference=None):
    unplanned = {k: v for k, v in planned.items() if k != INDEX_PLAN_KEY}
    ref, ref_grads = _step(model, unplanned, config, reference)
    ours, grads = _step(model, planned, config, reference)
    torch.testing.assert_close(ours.loss, ref.loss, rtol=1e-6, atol=1e-7)
    for k in ref.metrics:
        torch.testing.assert_close(ours.metrics[k].float(), ref.metrics[k].float(), rtol=1e-6, atol=1e-6, msg=k)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("delay", [True, False])
def test_planned_dpo_step_equals_boson_forward_lora_adapter_reference(delay, monkeypatch):
    cfg = make_config(8, delay)
    batch = pair_batch(cfg, [4, 2, 3], [3, 6, 1], index_plan=True)
    calls = []
    planned = training_forward._planned_layer
    monkeypatch.setattr(training_forward, "_planned_layer", lambda *a: calls.append(1) or planned(*a))
    _assert_same(lora_model(cfg), batch, PreferenceConfig(beta=0.5, sft_weight=0.3, chunk_size=7))
    assert calls  # the planned path ran (policy and reference forwards)


def test_planned_dpo_step_equals_boson_forward_full_stored_reference():
    cfg = make_config(8, True)
    batch = pair_batch(cfg, [5, 1], [2, 3], seed=3, index_plan=True)
    model = base_model(cfg)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    stored = torch.tensor([-40.0, -35.0, -38.0, -50.0], dtype=torch.float64)
    _assert_same(model, batch, PreferenceConfig(beta=0.2, length_normalize=True, chunk_size=5), stored)


def test_plan_gives_each_sequence_its_rows():
    """The plan's per-sequence row counts are the labelled audio rows of each sequence (chosen, then rejected)."""
    cfg = make_config(8, True)
    plan = pair_batch(cfg, [4, 2], [3, 6], index_plan=True)[INDEX_PLAN_KEY]
    seq_len = plan.attention_mask.shape[1]
    assert list(plan.audio_rows_per_seq) == torch.bincount(plan.audio_pos // seq_len, minlength=4).tolist()
    assert all(n > 0 for n in plan.audio_rows_per_seq) and sum(plan.audio_rows_per_seq) == plan.audio_pos.numel()

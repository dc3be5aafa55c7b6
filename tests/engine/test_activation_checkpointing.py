"""Activation checkpointing: same LoRA gradients, and the selected layers really recompute in the backward."""
import copy

import pytest
import torch

from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing
from higgs_ds.loss import LossConfig, base_higgs_model, compute_loss


@pytest.fixture
def lora_model_and_batch(fresh_model, small_dataset):
    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.models.lora import apply_lora

    model = apply_lora(fresh_model, r=4, alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B so that every LoRA weight has a gradient
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    batch = TrainingCollator(model.config)([small_dataset[i] for i in range(2)])
    return model.train(), batch


def _count_layer_calls(model):
    counts = {}
    for i, layer in enumerate(base_higgs_model(model).layers):
        orig = layer.forward

        def counted(*a, _i=i, _orig=orig, **kw):
            counts[_i] = counts.get(_i, 0) + 1
            return _orig(*a, **kw)
        layer.forward = counted
    return counts


def _lora_grads(model, batch):
    model.zero_grad(set_to_none=True)
    compute_loss(model, batch, LossConfig()).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["all", "every_k"])
def test_same_gradients_and_layers_recompute(lora_model_and_batch, mode):
    model, batch = lora_model_and_batch
    ref = _lora_grads(model, batch)
    ckpt_model = copy.deepcopy(model)
    counts = _count_layer_calls(ckpt_model)
    n_layers = len(counts) or len(base_higgs_model(ckpt_model).layers)
    chosen = enable_activation_checkpointing(ckpt_model, mode, every_k=2)
    assert chosen == (list(range(n_layers)) if mode == "all" else list(range(0, n_layers, 2)))
    got = _lora_grads(ckpt_model, batch)
    assert got.keys() == ref.keys() and len(ref) > 0
    for name in ref:
        assert ref[name].abs().sum() > 0, name
        torch.testing.assert_close(got[name], ref[name], rtol=1e-6, atol=1e-6, msg=name)
    # forward once + recompute once in the backward for the checkpointed layers, once for the others
    assert counts == {i: (2 if i in chosen else 1) for i in range(n_layers)}
    counts.clear()
    with torch.no_grad():
        compute_loss(ckpt_model, batch, LossConfig())
    assert counts == {i: 1 for i in range(n_layers)}  # no checkpointing without grad


def test_off_leaves_the_model_alone(fresh_model):
    assert enable_activation_checkpointing(fresh_model, "off") == []
    assert all("forward" not in layer.__dict__ for layer in fresh_model.layers)
    with pytest.raises(ValueError):
        enable_activation_checkpointing(fresh_model, "some")


def test_recompute_fraction_counts_the_layers_apply_checkpoints(fresh_model):
    """The MFU's recompute term counts exactly the layers `apply` checkpoints."""
    import copy

    from higgs_ds.engine.activation_checkpointing import ActivationCheckpointingConfig

    n = len(fresh_model.layers)
    for mode, k in (("off", 2), ("all", 2), ("every_k", 2), ("every_k", 3)):
        cfg = ActivationCheckpointingConfig(mode, k)
        assert cfg.recompute_fraction(n) == len(cfg.apply(copy.deepcopy(fresh_model))) / n

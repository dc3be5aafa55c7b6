"""--modules_to_save: the chosen heads/embeddings train in full and travel in the saved adapter."""
import pytest
import torch
from safetensors.torch import load_file

from higgs_ds.loss import LossConfig, compute_loss
from higgs_ds.models.lora import apply_lora


def test_audio_head_trains_and_is_saved(tiny_assets, small_dataset, tmp_path):
    from peft import PeftModel

    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.models.loading import load_model

    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_assets.model_path), r=4, alpha=8,
                       modules_to_save=["audio_head", "audio_embeddings"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = [n for n in trainable if "audio_lm_head.modules_to_save" in n]
    emb = [n for n in trainable if "audio_codebook_embeddings.modules_to_save" in n]
    assert head and emb, sorted(trainable)[:10]
    assert not any("text_lm_head" in n for n in trainable)

    batch = TrainingCollator(model.config)([small_dataset[i] for i in range(2)])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    compute_loss(model, batch, LossConfig()).loss.backward()
    params = dict(model.named_parameters())
    assert params[head[0]].grad.abs().sum() > 0 and params[emb[0]].grad.abs().sum() > 0
    opt.step()
    model.eval()
    with torch.no_grad():
        trained = float(compute_loss(model, batch, LossConfig()).loss)

    model.save_pretrained(str(tmp_path / "adapter"))
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any("audio_lm_head" in k for k in saved) and any("audio_codebook_embeddings" in k for k in saved)
    reloaded = PeftModel.from_pretrained(load_model(tiny_assets.model_path), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert float(compute_loss(reloaded, batch, LossConfig()).loss) == pytest.approx(trained, rel=1e-6)
        base = float(compute_loss(load_model(tiny_assets.model_path).eval(), batch, LossConfig()).loss)
    assert abs(base - trained) > 1e-3  # the trained head copy, not the base head, came back


def test_unknown_module_is_rejected(fresh_model):
    with pytest.raises(ValueError, match="unknown modules_to_save"):
        apply_lora(fresh_model, modules_to_save=["lm_head"])

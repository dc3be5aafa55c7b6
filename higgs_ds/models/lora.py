"""LoRA through peft, without `task_type` (peft's CAUSAL_LM wrapper passes `labels=`, which Higgs rejects)."""
import logging

from peft import LoraConfig, get_peft_model

log = logging.getLogger(__name__)

# Regexes over module names (peft full-matches a string `target_modules`).
LORA_PRESETS = {
    "attn": r".*\.self_attn\.(q|k|v|o)_proj",
    "attn_mlp": r".*\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down))_proj",
    "attn_mlp_audio": r".*\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down)|audio_mlp\.(gate|up|down))_proj",
}


def apply_lora(model, r=16, alpha=32, dropout=0.0, preset="attn_mlp_audio", target_modules=None):
    """Wrap `model` in a `PeftModel`; adapters keep the model's dtype (no fp32 upcast of activations)."""
    targets = target_modules or LORA_PRESETS[preset]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=False)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%.2f%%)", r, alpha,
             target_modules or preset, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model

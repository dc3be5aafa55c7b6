"""LoRA through peft, without `task_type` (peft's CAUSAL_LM wrapper passes `labels=`, which Higgs rejects)."""
import logging

log = logging.getLogger(__name__)

# Regexes over module names (peft full-matches a string `target_modules`); the Whisper audio tower (frozen
# encoder of user-turn audio) never gets adapters from a preset.
_NOT_TOWER = r"(?!audio_tower\.)"
LORA_PRESETS = {
    "attn": _NOT_TOWER + r".*\.self_attn\.(q|k|v|o)_proj",
    "attn_mlp": _NOT_TOWER + r".*\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down))_proj",
    "attn_mlp_audio": _NOT_TOWER + r".*\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down)|audio_mlp\.(gate|up|down))_proj",
}

# --modules_to_save choices -> module names: fully trained (and saved in the adapter) copies of these modules.
MODULES_TO_SAVE = {
    "audio_head": "audio_decoder_proj.audio_lm_head",
    "audio_embeddings": "audio_codebook_embeddings",
    "text_head": "audio_decoder_proj.text_lm_head",
}


def apply_lora(model, r=16, alpha=32, dropout=0.0, preset="attn_mlp_audio", target_modules=None,
               modules_to_save=(), extra_modules_to_save=()):
    """Wrap `model` in a `PeftModel`; adapters keep the model's dtype (no fp32 upcast of activations).

    `modules_to_save`: keys of `MODULES_TO_SAVE`, trained in full and stored in the adapter;
    `extra_modules_to_save`: more module names (peft matches name suffixes), e.g. `models/finetune.py`'s audio path.
    """
    from peft import LoraConfig, get_peft_model

    targets = target_modules or LORA_PRESETS[preset]
    unknown = sorted(set(modules_to_save or ()) - set(MODULES_TO_SAVE))
    if unknown:
        raise ValueError(f"unknown modules_to_save {unknown}; choose from {sorted(MODULES_TO_SAVE)}")
    to_save = [MODULES_TO_SAVE[m] for m in modules_to_save or ()] + list(extra_modules_to_save or ())
    to_save = list(dict.fromkeys(to_save)) or None
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        modules_to_save=to_save)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=False)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%.2f%%)", r, alpha,
             target_modules or preset, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model

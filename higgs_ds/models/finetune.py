"""What `--finetune lora|audio|full` trains, and the artefact each one leaves in the output dir.

- `lora`: peft LoRA adapters (`--lora_preset`, `--modules_to_save`); writes `adapter/` (a peft adapter).
- `audio`: the audio path in full (each dual-FFN layer's `audio_mlp` and its two norms, the audio head, the codebook
  embeddings, as peft `modules_to_save`) and LoRA on the text path (attention + text MLP); writes `adapter/`, which
  holds both (`higgs-ds export --merge` folds it into a full model dir).
- `full`: every weight, no peft; writes `model/`, a full model dir (config, safetensors, text tokenizer) that
  `HiggsAudioServeEngine` loads as it is.
Under ZeRO-3 the weights are partitioned across ranks: the final save gathers them on every rank first (collective).
"""
import dataclasses
import logging
import os
from typing import List, Optional

from ..config import option
from .lora import LORA_PRESETS, MODULES_TO_SAVE, apply_lora

log = logging.getLogger(__name__)
MODES = ("lora", "audio", "full")
TEXT_PATH_PRESET = "attn_mlp"  # LoRA on the text path in `audio` mode
AUDIO_PATH_MODULES = ("audio_mlp", "audio_input_layernorm", "audio_post_attention_layernorm",
                      "audio_decoder_proj.audio_lm_head", "audio_codebook_embeddings")


def artefact_name(mode):
    """What a run of `mode` writes: `model` (a full model dir) or `adapter`."""
    return "model" if mode == "full" else "adapter"


def artefact_dir(output_dir, mode):
    return os.path.join(output_dir, artefact_name(mode))


def prepare_model(model, mode, r=16, alpha=32, dropout=0.0, preset="attn_mlp_audio", target_modules=None,
                  modules_to_save=()):
    """The model to train in `mode`: a peft `PeftModel` (lora, audio) or the bare model with every weight trainable."""
    if mode == "lora":
        return apply_lora(model, r, alpha, dropout, preset, target_modules, modules_to_save)
    if mode == "audio":
        return apply_lora(model, r, alpha, dropout, TEXT_PATH_PRESET, target_modules, modules_to_save,
                          extra_modules_to_save=AUDIO_PATH_MODULES)
    if mode == "full":
        model.requires_grad_(True)
        n = sum(p.numel() for p in model.parameters())
        log.info("full fine-tuning: all %s parameters trainable", f"{n:,}")
        return model
    raise ValueError(f"--finetune must be one of {MODES}, got {mode!r}")


def _consolidated_state_dict(engine):
    """The module's full state dict on rank 0 (None elsewhere) under ZeRO-3, else None on every rank."""
    if engine.zero_optimization_stage() != 3:
        return None
    return engine._zero3_consolidated_16bit_state_dict()  # collective: every rank must call it


def save_final(engine, mode, output_dir, tokenizer_dir, rank):
    """Write the run's artefact (`artefact_dir`); call on every rank. Returns its path."""
    return save_to(engine, mode, artefact_dir(output_dir, mode), tokenizer_dir, rank)


def save_to(engine, mode, path, tokenizer_dir, rank):
    """Write the adapter (lora, audio) or full model dir (full) at `path`; call on every rank (ZeRO-3 partitions
    are gathered to rank 0, which writes). Returns `path`."""
    state = _consolidated_state_dict(engine)
    if rank == 0:
        os.makedirs(path, exist_ok=True)
        kwargs = {"state_dict": state} if state is not None else {}
        if mode == "full":
            engine.module.save_pretrained(path, safe_serialization=True, **kwargs)
            from .loading import load_text_tokenizer

            load_text_tokenizer(tokenizer_dir).save_pretrained(path)
        else:
            engine.module.save_pretrained(path, **kwargs)
        log.info("%s written to %s", "full model" if mode == "full" else "adapter", path)
    return path


@dataclasses.dataclass
class FinetuneConfig:
    """What trains: the mode, and for lora/audio the adapter (rank, scaling, layers, modules trained in full)."""
    finetune: str = option("lora", "lora: LoRA adapters (--lora_preset), writes adapter/; audio: the audio path in "
                                   "full (dual-FFN audio MLPs and norms, audio head, codebook embeddings) + LoRA on "
                                   "the text path, writes adapter/; full: every weight (bf16, ZeRO-2/3, activation "
                                   "checkpointing advised), writes model/, a full model dir", choices=MODES)
    lora_r: int = option(16, "LoRA rank", minimum=1)
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.0, "dropout on the LoRA input")
    lora_preset: str = option("attn_mlp_audio", "which linear layers get adapters", choices=sorted(LORA_PRESETS))
    lora_target_modules: Optional[List[str]] = option(None, "explicit module-name suffixes (overrides --lora_preset)",
                                                      type=str, nargs="+")
    modules_to_save: List[str] = option([], "train these modules in full and store them in the adapter: audio_head "
                                            "(audio_decoder_proj.audio_lm_head), audio_embeddings "
                                            "(audio_codebook_embeddings), text_head (audio_decoder_proj.text_lm_head, "
                                            "vocab x hidden: large)", nargs="+", choices=sorted(MODULES_TO_SAVE))

    def apply(self, model):
        return prepare_model(model, self.finetune, self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_preset,
                             self.lora_target_modules, self.modules_to_save)

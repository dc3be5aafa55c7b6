"""Export a trained adapter: adapter-only dir, a merged full model dir for the serve engine, or (`fmt
"transformers"`) the merged model and adapter for transformers >= 5 (`higgs-ds export`, commands/export.py).

The merged dir holds config.json, model.safetensors and the text tokenizer, i.e. exactly what
`HiggsAudioServeEngine(model_dir, audio_tokenizer_dir)` loads. After merging, the merged model and the
LoRA model are run on the same probe batch and must agree (max |Δ| of the hidden-state logits is reported).
"""
import json
import logging
import os
import shutil

import torch

from ..errors import InputNotFound

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def find_adapter(path):
    """Accept an adapter dir, a run's output dir (adapter/ inside) or a checkpoint tag dir."""
    for cand in (path, os.path.join(path, "adapter")):
        if os.path.isfile(os.path.join(cand, "adapter_config.json")):
            return cand
    raise InputNotFound(f"--checkpoint: no adapter_config.json in {path} or {path}/adapter")


def find_full_model(path):
    """A `--finetune full` output (model/ inside) or a full model dir itself; None for adapter checkpoints."""
    for cand in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(cand, "config.json")) and not os.path.isfile(
                os.path.join(cand, "adapter_config.json")):
            return cand
    return None


def base_model_path(adapter_dir, override=None):
    from ..models.locate import model_dir

    if override:
        return model_dir(override)
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base or not os.path.isdir(base):
        raise InputNotFound(f"{adapter_dir}/adapter_config.json names base model {base!r}, which is not a "
                                "local dir: pass --model_path")
    return base


def load_lora_model(adapter_dir, model_path=None, dtype=torch.float32):
    """(PeftModel on the base HiggsAudioModel, base model dir)."""
    from peft import PeftModel

    from ..models.loading import load_model

    base_dir = base_model_path(adapter_dir, model_path)
    return PeftModel.from_pretrained(load_model(base_dir, dtype), adapter_dir).eval(), base_dir


def probe_batch(config, n_text=24, n_audio=12, seed=0):
    """A tiny batch with text and one audio-out clip, enough to exercise every adapted layer."""
    g = torch.Generator().manual_seed(seed)
    vocab = min(config.text_config.vocab_size, 256)
    ids = torch.randint(0, vocab, (n_text,), generator=g).tolist()
    ids += [config.audio_out_bos_token_id, config.audio_out_token_idx, config.audio_eos_token_id]
    codes = torch.randint(0, config.audio_codebook_size, (config.audio_num_codebooks, n_audio), generator=g)
    ids_t = torch.tensor([ids])
    return dict(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), audio_out_ids=codes,
                audio_out_ids_start=torch.tensor([0]), audio_out_ids_start_group_loc=torch.tensor([0]))


@torch.no_grad()
def max_output_difference(model_a, model_b, config):
    batch = probe_batch(config)
    a, b = model_a(**batch), model_b(**batch)
    return max((a.logits.float() - b.logits.float()).abs().max().item(),
               (a.audio_logits.float() - b.audio_logits.float()).abs().max().item())


def export(checkpoint, output, merge=False, dtype="fp32", model_path=None, tolerance=1e-3, fmt="boson"):
    """Write the adapter (and, with `merge`, a full model dir), plus a model card (README.md). Returns the max probe
    difference or None. `fmt="transformers"`: merged model and adapter in the native layout (export_native.py)."""
    from ..models.loading import load_text_tokenizer
    from .model_card import write_model_card

    full = find_full_model(checkpoint)
    if full is not None:  # --finetune full: the weights are the model; nothing to merge
        shutil.copytree(full, output, dirs_exist_ok=True)
        log.info("full model dir %s copied to %s", full, output)
        return None
    adapter_dir = find_adapter(checkpoint)
    os.makedirs(output, exist_ok=True)
    if not merge and fmt == "boson":
        shutil.copytree(adapter_dir, output, dirs_exist_ok=True)
        write_model_card(output, adapter_dir, base_model_path(adapter_dir, model_path), fmt)
        log.info("adapter copied to %s", output)
        return None
    lora, base_dir = load_lora_model(adapter_dir, model_path, torch.float32)
    reference = lora  # unmerged LoRA model, same weights
    import copy

    merged = copy.deepcopy(lora).merge_and_unload().eval()
    diff = max_output_difference(reference, merged, merged.config)
    if diff > tolerance:
        raise RuntimeError(f"merged model disagrees with the LoRA model on the probe batch: max |diff| {diff:.3g}")
    log.info("merged model matches the LoRA model on a probe batch (max |diff| %.2e)", diff)
    if fmt == "transformers":
        write_native(merged, adapter_dir, output, DTYPES[dtype], base_dir)
    else:
        merged.to(DTYPES[dtype]).save_pretrained(output, safe_serialization=True)
    load_text_tokenizer(base_dir).save_pretrained(output)
    with open(os.path.join(output, "higgs_ds_export.json"), "w") as f:
        json.dump({"adapter": os.path.abspath(adapter_dir), "base_model": base_dir, "dtype": dtype, "format": fmt,
                   "probe_max_abs_diff": diff}, f, indent=1)
    write_model_card(output, adapter_dir, base_dir, fmt, os.path.join(output, "adapter") if fmt != "boson" else None)
    log.info("merged model written to %s (%s)", output, dtype)
    return diff


def write_native(merged, adapter_dir, output, dtype, base_dir):
    """Merged model (native layout) in `output`, the adapter re-keyed for the native base in `output`/adapter."""
    from .export_native import adapter_to_native, native_base, write_native_model

    write_native_model(merged, output, dtype, base_dir)
    adapter_to_native(adapter_dir, os.path.join(output, "adapter"), *native_base(base_dir))

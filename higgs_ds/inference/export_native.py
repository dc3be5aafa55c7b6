"""`higgs-ds export --format transformers`: the merged model in transformers' native layout
(`HiggsAudioV2ForConditionalGeneration`, transformers >= 5) and the LoRA adapter re-keyed to its module names.

    from transformers import HiggsAudioV2ForConditionalGeneration
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(OUT, use_text_head=True)       # merged
    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(NATIVE_BASE, use_text_head=True)
    model = peft.PeftModel.from_pretrained(base, f"{OUT}/adapter")                               # adapter
"""
import os

from ..models import lm_format
from ..models.convert import SOURCE_FILE, read_json, special_ids, write_json, write_state_dict

PEFT_PREFIX = "base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def native_module_name(name):
    """A boson module path -> its native path (`audio_decoder_proj.audio_lm_head` -> `audio_lm_head`)."""
    return lm_format.rename(name + ".weight", lm_format.TO_NATIVE)[: -len(".weight")]


def adapter_key_to_native(key):
    """`base_model.model.<boson key>` -> `base_model.model.<native key>` (LoRA and modules_to_save weights)."""
    if not key.startswith(PEFT_PREFIX):
        raise lm_format.FormatError(f"adapter weight {key!r} lacks the peft prefix {PEFT_PREFIX!r}")
    return PEFT_PREFIX + lm_format.rename(key[len(PEFT_PREFIX):], lm_format.TO_NATIVE)


def adapter_to_native(adapter_dir, out_dir, base_model, revision=None):
    """Re-key a boson-trained peft adapter for the native model; `base_model` (and `revision`): its native base."""
    from safetensors.torch import load_file, save_file

    os.makedirs(out_dir, exist_ok=True)
    config = read_json(os.path.join(adapter_dir, "adapter_config.json"))
    config["modules_to_save"] = [native_module_name(m) for m in config.get("modules_to_save") or []] or None
    config.update(base_model_name_or_path=base_model, revision=revision, auto_mapping=None)
    write_json(config, os.path.join(out_dir, "adapter_config.json"))
    sd = load_file(os.path.join(adapter_dir, ADAPTER_WEIGHTS))
    save_file({adapter_key_to_native(k): v.contiguous() for k, v in sd.items()},
              os.path.join(out_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})


def write_native_model(merged, out_dir, dtype, base_dir):
    """config.json + safetensors of a merged boson `HiggsAudioModel`, in the native layout."""
    config = lm_format.config_to_native(merged.config.to_dict(), special_ids(base_dir))
    config["dtype"] = str(dtype).removeprefix("torch.")
    write_json(config, os.path.join(out_dir, "config.json"))
    write_state_dict(lm_format.state_dict_to_native({k: v.to(dtype) for k, v in merged.state_dict().items()}), out_dir)


def native_base(base_dir):
    """(name, revision) a native user loads as the adapter's base: the official Hub repo at `main` (the native
    conversion of the pinned boson revision) when the base came from it; the native dir or Hub revision it was
    converted from; else the boson dir itself (convert it with `higgs-ds convert --to native`)."""
    from ..models import hub

    source = os.path.join(base_dir, SOURCE_FILE)
    if os.path.isfile(source):
        name = read_json(source)["source"]
        ref = hub.parse_ref(name)
        return (ref.repo_id, ref.revision) if ref else (name, None)
    ref = hub.ref_from_path(base_dir)
    if ref and ref.repo_id in hub.PINNED:
        return ref.repo_id, None
    return os.path.abspath(base_dir), None

"""LM dirs between the boson layout and the transformers-native one, and the cache of converted dirs that loading
uses: a native dir is converted once into $HIGGS_DS_CACHE/converted/<key>/ (`higgs-ds convert`: tools/convert.py).
"""
import hashlib
import json
import logging
import os
import shutil

from . import hub, lm_format

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja")
MAX_SHARD = "5GB"
SOURCE_FILE = "higgs_ds_source.json"  # in a converted dir: where it came from


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def read_state_dict(model_dir):
    """All tensors of a safetensors checkpoint (single file or sharded with an index)."""
    from safetensors.torch import load_file

    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = sorted(set(read_json(index)["weight_map"].values())) if os.path.isfile(index) else ["model.safetensors"]
    sd = {}
    for name in files:
        sd.update(load_file(os.path.join(model_dir, name)))
    return sd


def write_state_dict(sd, model_dir):
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict({k: v.contiguous() for k, v in sd.items()}, model_dir, max_shard_size=MAX_SHARD)


def special_ids(model_dir):
    """token -> id of the added tokens in the dir's tokenizer.json (empty when there is none)."""
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        return {}
    return {t["content"]: t["id"] for t in read_json(path).get("added_tokens", [])}


def copy_tokenizer(src, dst, to_boson):
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    cfg_path = os.path.join(dst, "tokenizer_config.json")
    if to_boson and os.path.isfile(cfg_path):  # transformers 5 names backend classes transformers 4 does not have
        cfg = read_json(cfg_path)
        if cfg.get("tokenizer_class") not in (None, "PreTrainedTokenizerFast"):
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            write_json(cfg, cfg_path)


def boson_to_native_dir(src, dst):
    """Write the native layout of boson model dir `src` into `dst` (config, weights, tokenizer)."""
    os.makedirs(dst, exist_ok=True)
    config = lm_format.config_to_native(read_json(os.path.join(src, "config.json")), special_ids(src))
    write_json(config, os.path.join(dst, "config.json"))
    write_state_dict(lm_format.state_dict_to_native(read_state_dict(src)), dst)
    copy_tokenizer(src, dst, to_boson=False)


def native_to_boson_dir(src, dst):
    """Write the boson layout of native model dir `src` into `dst`. A checkpoint saved without the text head
    (transformers' default `use_text_head=False`) gets a copy of the input embeddings as its text head."""
    os.makedirs(dst, exist_ok=True)
    native = read_json(os.path.join(src, "config.json"))
    write_json(lm_format.config_to_boson(native, special_ids(src)), os.path.join(dst, "config.json"))
    sd = lm_format.state_dict_to_boson(read_state_dict(src))
    if "audio_decoder_proj.text_lm_head.weight" not in sd:
        log.warning("%s has no text_lm_head: initialised from embed_tokens (text loss starts high)", src)
        sd["audio_decoder_proj.text_lm_head.weight"] = sd["embed_tokens.weight"].clone()
    write_state_dict(sd, dst)
    copy_tokenizer(src, dst, to_boson=True)
    write_json({"source": native_source_name(src), "format": "native"}, os.path.join(dst, SOURCE_FILE))


def native_source_name(src):
    """`org/name@rev` for a hub snapshot dir, else the absolute path (recorded for exports and model cards)."""
    ref = hub.ref_from_path(src)
    return str(ref) if ref else os.path.abspath(src)


def model_format(model_dir):
    """'boson', 'native' or None, from config.json's model_type."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    config = read_json(path)
    return "native" if lm_format.is_native_config(config) else "boson" if lm_format.is_boson_config(config) else None


def source_key(model_dir):
    """Identity of a dir's content for the conversion cache: its real path and each file's name, size, mtime."""
    real = os.path.realpath(model_dir)
    stats = sorted((n, os.stat(os.path.join(real, n)).st_size, os.stat(os.path.join(real, n)).st_mtime_ns)
                   for n in os.listdir(real) if os.path.isfile(os.path.join(real, n)))
    return hashlib.sha256(json.dumps([real, stats]).encode()).hexdigest()[:16]


def converted_cache_root():
    from ..constants import cache_root

    return os.path.join(cache_root(), "converted")


def ensure_boson_model(model_dir):
    """`model_dir` itself when it is boson, else its boson conversion (built once, in the cache)."""
    if model_format(model_dir) != "native":
        return model_dir
    from ..durable import build_once

    root = os.path.join(converted_cache_root(), f"model-{source_key(model_dir)}")
    if not os.path.exists(os.path.join(root, ".complete")):
        log.info("%s is in the transformers-native layout: converting it once into %s", model_dir, root)
    return build_once(root, lambda tmp: native_to_boson_dir(model_dir, tmp))

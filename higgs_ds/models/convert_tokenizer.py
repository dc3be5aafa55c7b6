"""Audio tokenizer dirs between boson's layout (config.json + model.pth [+ semantic_teacher/]) and transformers'
(config.json + model.safetensors + preprocessor_config.json); key and config maps in tokenizer_format.py.
A native dir converts into a boson dir with its own `semantic_teacher/` (built from the native config and weights),
so loading it needs no hub."""
import os

import torch

from . import tokenizer_format as tf
from .audio_tokenizer import SEMANTIC_TEACHER_SUBDIR, build_audio_tokenizer, find_semantic_teacher
from .convert import read_json, read_state_dict, write_json, write_state_dict


def tokenizer_format(path):
    """'boson', 'native' or None for an audio tokenizer dir."""
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return None
    if read_json(config).get("model_type") == "higgs_audio_v2_tokenizer":
        return "native"
    return "boson" if os.path.isfile(os.path.join(path, "model.pth")) else None


def boson_to_native_dir(src, dst):
    os.makedirs(dst, exist_ok=True)
    boson = read_json(os.path.join(src, "config.json"))
    teacher = read_json(os.path.join(find_semantic_teacher(src), "config.json"))
    write_json(tf.config_to_native(boson, teacher), os.path.join(dst, "config.json"))
    sd = torch.load(os.path.join(src, "model.pth"), map_location="cpu", weights_only=True)
    write_state_dict(tf.state_dict_to_native(sd, len(boson["ratios"])), dst)
    write_json({"feature_extractor_type": "DacFeatureExtractor", "feature_size": 1, "padding_side": "right",
                "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": boson["sample_rate"],
                "hop_length": int(torch.tensor(boson["ratios"]).prod())},
               os.path.join(dst, "preprocessor_config.json"))


def _write_teacher(teacher_config, native_sd, path):
    """The semantic teacher as a transformers 4 `save_pretrained` dir, weights from the native checkpoint."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**{k: v for k, v in teacher_config.items() if k != "transformers_version"})
    teacher = AutoModel.from_config(config)
    prefix = "semantic_model."
    teacher.load_state_dict({k[len(prefix):]: v for k, v in native_sd.items() if k.startswith(prefix)})
    teacher.save_pretrained(path)


def native_to_boson_dir(src, dst):
    os.makedirs(dst, exist_ok=True)
    native_sd = read_state_dict(src)
    n_q = sum(1 for k in native_sd if k.startswith("quantizer.quantizers.") and k.endswith(".project_in.weight"))
    boson, teacher_config = tf.config_to_boson(read_json(os.path.join(src, "config.json")), n_q)
    teacher_dir = os.path.join(dst, SEMANTIC_TEACHER_SUBDIR)
    _write_teacher(teacher_config, native_sd, teacher_dir)
    # boson's own key list: the inverse map is exact by construction
    keys = list(build_audio_tokenizer(boson, teacher_dir).state_dict())
    torch.save(tf.state_dict_to_boson(native_sd, keys, len(boson["ratios"])), os.path.join(dst, "model.pth"))
    write_json(boson, os.path.join(dst, "config.json"))


def ensure_boson_audio_tokenizer(path):
    """`path` itself when boson, else its boson conversion (built once, in the cache)."""
    if tokenizer_format(path) != "native":
        return path
    from ..durable import build_once
    from .convert import converted_cache_root, source_key

    root = os.path.join(converted_cache_root(), f"audio_tokenizer-{source_key(path)}")
    return build_once(root, lambda tmp: native_to_boson_dir(path, tmp))

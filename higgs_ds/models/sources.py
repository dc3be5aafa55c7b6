"""`--model_path` / `--audio_tokenizer_path` values -> local boson-format dirs: a local dir as it is, a Hub repo id
(`org/name[@revision]`, official repos pinned to their boson-format commits) from the hub cache, and a
transformers-native model converted once into the cache. Everything boson-multimodal is handed comes from here."""
import json
import os

from . import hub
from .convert import ensure_boson_model


def model_dir(spec, flag="--model_path"):
    if spec is None:
        return None
    return ensure_boson_model(hub.resolve(spec, "model", flag))


def audio_tokenizer_dir(spec, flag="--audio_tokenizer_path"):
    if spec is None:
        return None
    path = hub.resolve(spec, "audio_tokenizer", flag)
    config = os.path.join(path, "config.json")
    if os.path.isfile(config) and not os.path.isfile(os.path.join(path, "model.pth")):
        with open(config) as f:
            native = json.load(f).get("model_type") == "higgs_audio_v2_tokenizer"
        if native:
            ref = hub.parse_ref(spec)
            raise hub.SourceError(
                f"{flag} {ref or spec}: a transformers-native audio tokenizer (model.safetensors); higgs_ds needs the "
                f"boson format (model.pth): use {hub.TOKENIZER_REPO} (pinned to {hub.PINNED[hub.TOKENIZER_REPO]})")
    return path


def default_audio_tokenizer(model_spec):
    """The official tokenizer repo for the official model repo (so `--model_path <hub id>` alone works)."""
    ref = hub.parse_ref(model_spec) if model_spec else None
    return hub.TOKENIZER_REPO if ref is not None and ref.repo_id == hub.MODEL_REPO else None

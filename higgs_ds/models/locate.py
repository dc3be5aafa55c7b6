"""`--model_path` / `--audio_tokenizer_path` values -> local boson-format dirs: a local dir as it is, a Hub repo id
(`org/name[@revision]`, official repos pinned to their boson-format commits) from the hub cache, and a
transformers-native model or audio tokenizer converted once into the cache. Everything boson-multimodal is handed comes from here."""
from . import hub
from .convert import ensure_boson_model
from .convert_tokenizer import ensure_boson_audio_tokenizer


def model_dir(spec, flag="--model_path"):
    if spec is None:
        return None
    return ensure_boson_model(hub.resolve(spec, "model", flag))


def audio_tokenizer_dir(spec, flag="--audio_tokenizer_path"):
    if spec is None:
        return None
    return ensure_boson_audio_tokenizer(hub.resolve(spec, "audio_tokenizer", flag))


def tokenizer_dir(spec, flag="--tokenizer_path"):
    """A text tokenizer dir, or a repo id whose tokenizer files alone are fetched (no weights)."""
    if spec is None:
        return None
    return hub.resolve(spec, "tokenizer", flag)


def default_audio_tokenizer(model_spec):
    """The official tokenizer repo for the official model repo (so `--model_path <hub id>` alone works)."""
    ref = hub.parse_ref(model_spec) if model_spec else None
    return hub.TOKENIZER_REPO if ref is not None and ref.repo_id == hub.MODEL_REPO else None

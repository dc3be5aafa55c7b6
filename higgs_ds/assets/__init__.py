"""The embedded tiny default (model, audio tokenizer, data), built by our code on first use."""
from .tiny import TinyAssets, ensure_tiny_assets, ensure_tiny_data  # noqa: F401


def resolve_model_paths(model_path=None, audio_tokenizer_path=None, tokenizer_path=None):
    """`ModelPaths` of the given dirs; with no --model_path, the embedded tiny default's (built on first use)."""
    from ..models.loading import ModelPaths

    if model_path is None:
        tiny = ensure_tiny_assets()
        model_path, audio_tokenizer_path = tiny.model_path, audio_tokenizer_path or tiny.audio_tokenizer_path
    return ModelPaths.resolve(model_path, audio_tokenizer_path, tokenizer_path)

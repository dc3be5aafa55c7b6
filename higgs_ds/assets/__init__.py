"""The embedded tiny default: a tiny random Higgs Audio model, tokenizers and data, built offline by our code."""
from .tiny import TinyAssets, ensure_tiny_assets, ensure_tiny_data  # noqa: F401

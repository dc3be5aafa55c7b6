"""Shared fixtures: the embedded tiny assets (built once per test session) and a small fixed dataset."""
import os

from tests.helpers import ROOT

os.environ.setdefault("HIGGS_DS_CACHE", os.path.join(ROOT, ".test_cache"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_assets():
    from higgs_ds.assets import ensure_tiny_assets

    return ensure_tiny_assets()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_assets):
    """(model, text tokenizer, audio tokenizer) loaded from the tiny dirs through the real loading path."""
    from higgs_ds.models.loading import ModelPaths, load_all

    return load_all(ModelPaths.resolve(tiny_assets.model_path, tiny_assets.audio_tokenizer_path))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """Nine synthetic samples: train.jsonl (8) and val.jsonl (1)."""
    from higgs_ds.data.synthetic import create_sample_data

    return create_sample_data(str(tmp_path_factory.mktemp("data")), num_samples=9, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tiny_assets, tiny_bundle, small_data):
    """`small_data`'s train.jsonl through the one data path: prepared once into the test cache, memory-mapped (the
    e2e runs on that file then reuse the copy instead of encoding in every rank)."""
    from higgs_ds.data.training_set import open_training_set

    return open_training_set(small_data[0], tiny_bundle[1], tiny_assets.model_path, tiny_assets.audio_tokenizer_path)


@pytest.fixture
def fresh_model(tiny_assets):
    from higgs_ds.models.loading import load_model

    torch.manual_seed(0)
    return load_model(tiny_assets.model_path)

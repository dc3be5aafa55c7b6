"""The exported README.md states the base model and revision, the data, the training setup and the final metrics."""
import json
import os

from higgs_ds.inference.model_card import write_model_card
from higgs_ds.models import hub


def _run_dir(tmp_path):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                                                             "target_modules": ["q_proj"], "modules_to_save": None}))
    report = {"samples_read": 12, "samples_ok": 11, "samples_bad": 1, "speakers": 3, "audio_hours": 0.25,
              "token_length": {"p50": 300, "p90": 400, "p99": 410, "max": 420}}
    metrics = {"history": [{"loss/total": 9.0, "loss/text": 2.0, "loss/audio": 7.0},
                           {"loss/total": 5.123456, "loss/text": 1.0, "loss/audio": 4.123456}],
               "val": {"loss/total": 6.5, "acc/audio_cb0": 0.25, "perf/x": 1}, "world_size": 8,
               "train_data": "data/train.jsonl", "val_data": None,
               "args": {"learning_rate": 1e-4, "num_epochs": 3, "batch_size": 4, "seed": 42}, "data": {"train": report}}
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    return str(adapter)


def test_card_from_a_hub_base(tmp_path):
    rev = hub.PINNED[hub.MODEL_REPO]
    base = str(tmp_path / "hub" / "models--bosonai--higgs-audio-v2-generation-3B-base" / "snapshots" / rev)
    out = tmp_path / "out"
    out.mkdir()
    facts = write_model_card(str(out), _run_dir(tmp_path), base, "boson")
    assert facts["base_model"] == {"repo": hub.MODEL_REPO, "revision": rev}
    card = (out / "README.md").read_text()
    assert f"base_model: {hub.MODEL_REPO}" in card and f"revision `{rev}`" in card
    assert "`train` (`data/train.jsonl`): 11 samples (1 rejected), 3 speakers, 0.25 h of audio" in card
    assert "| learning_rate | 0.0001 |" in card and "| world_size | 8 |" in card and "| optimizer steps | 2 |" in card
    assert "| train loss/total | 5.1235 |" in card and "| val loss/total | 6.5 |" in card
    assert "| val acc/audio_cb0 | 0.25 |" in card and "perf/x" not in card
    assert "LoRA: r=8, lora_alpha=16" in card and "HiggsAudioServeEngine" in card


def test_card_from_a_local_base_without_run_facts(tmp_path, tiny_assets):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    write_model_card(str(tmp_path), str(adapter), tiny_assets.model_path, "transformers")
    card = (tmp_path / "README.md").read_text()
    assert f"Base model: `{os.path.abspath(tiny_assets.model_path)}`" in card and "base_model:" not in card
    assert "library_name: transformers" in card and "(no report recorded)" in card

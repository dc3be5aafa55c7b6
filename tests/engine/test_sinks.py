"""One metrics path (engine/sinks.py): the JSONL sink always, TensorBoard and W&B behind the same interface."""
import json
import sys
import types

import numpy as np
import pytest

from higgs_ds.engine.metrics import StepMeter
from higgs_ds.engine.sinks import JsonlSink, Sinks, build_sinks
from higgs_ds.errors import ConfigError


def test_jsonl_sink_is_strict_json_with_prefixes(tmp_path):
    path = tmp_path / "m.jsonl"
    sink = JsonlSink(str(path))
    sink.scalars({"step": 3, "loss/total": 1.5, "grad_norm": float("inf"), "note": "x", "flag": True}, 3)
    sink.scalars({"sim": 0.7}, 4, prefix="eval_gen/")
    sink.audio("samples/0/audio", np.zeros(2400, dtype=np.float32), 4, 24000)
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"step": 3, "loss/total": 1.5, "grad_norm": None}, {"step": 4, "eval_gen/sim": 0.7},
                     {"step": 4, "audio": "samples/0/audio", "seconds": 0.1}]


def test_step_meter_writes_through_its_sinks(tmp_path):
    path = tmp_path / "m.jsonl"
    meter = StepMeter(0, 1, total_steps=1, progress=False, sinks=Sinks([JsonlSink(str(path))]))
    meter.write({"loss/total": 2.0}, 1, "eval/")
    meter.close()
    assert json.loads(path.read_text()) == {"step": 1, "eval/loss/total": 2.0}


def test_wandb_sink_only_when_asked_and_installed(tmp_path, monkeypatch):
    logged = []
    run = types.SimpleNamespace(log=lambda d, step: logged.append((step, d)), finish=lambda: logged.append("done"))
    fake = types.SimpleNamespace(init=lambda **kw: run, Audio=lambda wav, sample_rate: ("audio", len(wav)),
                                 Image=lambda hwc: ("image", hwc.shape))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sinks = build_sinks(0, None, str(tmp_path / "m.jsonl"), wandb_project="proj")
    sinks.scalars({"loss/total": 1.0}, 5)
    sinks.image("spec", np.zeros((3, 4, 5)), 5)
    sinks.close()
    assert logged == [(5, {"loss/total": 1.0}), (5, {"spec": ("image", (4, 5, 3))}), "done"]
    assert not build_sinks(1, None, str(tmp_path / "x.jsonl"), wandb_project="proj")  # rank 1 writes nothing
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ConfigError, match="--wandb_project proj: Weights & Biases is not installed"):
        build_sinks(0, None, str(tmp_path / "y.jsonl"), wandb_project="proj")

"""Step metrics: accumulation-window means, throughput counts, TensorBoard scalars; the event file of a real run."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from higgs_ds.engine.metrics import StepMeter, batch_counts, flops_per_token


def _scalars(tb_dir):
    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _batch(n_text, n_audio_cols, b=2):
    return {"input_ids": torch.zeros(b, 10, dtype=torch.long), "attention_mask": torch.ones(b, 10)[:, :n_text // b],
            "audio_out_ids": torch.zeros(8, n_audio_cols, dtype=torch.long)}


def test_meter_averages_the_window_and_writes_tensorboard(tmp_path):
    meter = StepMeter(0, 1, total_steps=2, tensorboard_dir=str(tmp_path), progress=False)
    for loss, acc in ((2.0, 0.25), (4.0, 0.75)):
        meter.add({"loss/audio": torch.tensor(loss), "acc/audio_cb0": torch.tensor(acc), "tokens/audio": 9},
                  _batch(10, 50))
    rec = meter.finish(1, lr=1e-3, grad_norm=torch.tensor(0.5))
    assert rec["loss/audio"] == 3.0 and rec["acc/audio_cb0"] == 0.5 and rec["grad_norm"] == 0.5
    assert "tokens/audio" not in rec and "perf/mfu" not in rec  # no MFU without a known peak
    assert rec["perf/tokens_per_s"] > 0 and rec["perf/peak_memory_gib"] > 0
    assert rec["perf/audio_seconds_per_s"] == pytest.approx(rec["perf/tokens_per_s"] * 100 / 120 / 25)
    meter.add({"loss/audio": torch.tensor(1.0)}, _batch(10, 50))
    assert meter.finish(2, lr=1e-3)["loss/audio"] == 1.0  # the window resets after each step
    meter.write({"loss/total": 7.0}, 2, "eval/")
    meter.close()
    s = _scalars(str(tmp_path))
    assert s["loss/audio"] == {1: 3.0, 2: 1.0} and s["acc/audio_cb0"] == {1: 0.5} and s["eval/loss/total"] == {2: 7.0}
    assert {"lr", "grad_norm", "perf/tokens_per_s", "perf/data_wait_fraction"} <= set(s)


def test_batch_counts_and_flops_formula():
    assert batch_counts(_batch(12, 30)) == (12 + 30, 2, 30)
    lin = torch.nn.Linear(10, 10)  # 110 params
    lin.bias.requires_grad_(False)
    assert flops_per_token(lin) == 4 * 110 + 2 * 100
    assert flops_per_token(lin, recompute_fraction=1.0) == 6 * 110 + 2 * 100
    assert flops_per_token(lin, recompute_fraction=0.5) == 5 * 110 + 2 * 100


def test_json_safe_makes_skipped_steps_strict_json():
    import math

    from higgs_ds.engine.metrics import json_safe

    history = [{"step": 3, "loss/total": math.nan, "grad_norm": math.inf, "lr": 1e-4}, {"nested": [-math.inf, 2.0]}]
    text = json.dumps(json_safe(history), allow_nan=False)
    assert json.loads(text) == [{"step": 3, "loss/total": None, "grad_norm": None, "lr": 1e-4}, {"nested": [None, 2.0]}]

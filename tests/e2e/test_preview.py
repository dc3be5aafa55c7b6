"""Audio previews during training: TensorBoard gets audio and spectrograms, and training is unchanged by them."""
import json
import os

import pytest

from tests.helpers import PYTHON, run_cmd

pytestmark = pytest.mark.slow


def _run(small_data, out, *extra):
    run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--val_data", small_data[1],
             "--max_steps", "4", "--num_epochs", "2", "--learning_rate", "3e-3", "--output_dir", out,
             "--no_progress", *extra])
    with open(os.path.join(out, "metrics.json")) as f:
        return [h["loss/total"] for h in json.load(f)["history"]]


def test_previews_reach_tensorboard_and_leave_training_alone(small_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with_preview = _run(small_data, str(tmp_path / "p"), "--sample_every", "2", "--num_preview_prompts", "1",
                        "--preview_max_new_tokens", "40")
    without = _run(small_data, str(tmp_path / "n"))
    assert with_preview == pytest.approx(without, rel=1e-6)  # generation consumed no RNG and restored train()
    acc = EventAccumulator(str(tmp_path / "p" / "tensorboard"), size_guidance={"audio": 0, "images": 0}).Reload()
    audio = acc.Audio("samples/0/audio")
    assert [a.step for a in audio] == [2, 4]
    assert all(a.sample_rate == 24000 and a.length_frames > 0 for a in audio)
    assert [i.step for i in acc.Images("samples/0/spectrogram")] == [2, 4]

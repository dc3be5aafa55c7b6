"""Generation eval during training (higgs_ds/evaluation/in_training.py) and --keep_best: the metrics and the SIM
warning on planted rows, the best adapter on a planted metric sequence, flag checks, and a tiny training run that
logs eval_gen/* at step 0 (base model) and later, keeps the best adapter, and whose final teacher-forced eval and
generation scores equal `higgs-ds evaluate [--generate]` on the saved adapter."""
import json
import os

import pytest

from tests.helpers import PYTHON, run_cmd


def _keeper(tmp_path, metric):
    from higgs_ds.evaluation.best import BestKeeper

    state = {"step": None}

    def save(d):  # a stand-in adapter: records which step's weights were saved
        os.makedirs(d)
        with open(os.path.join(d, "weights.txt"), "w") as f:
            f.write(str(state["step"]))

    return BestKeeper(metric, str(tmp_path), save), state


@pytest.mark.parametrize("metric, key, values", [
    ("sim", "sim", [0.61, 0.70, 0.65, 0.74, None, 0.72]),
    ("wer", "error_rate", [0.30, 0.22, 0.25, 0.12, 0.12, 0.40]),
    ("loss", "loss/total", [9.0, 8.1, 8.5, 7.9, 8.0, None]),
])
def test_keep_best_keeps_the_best_step(tmp_path, metric, key, values):
    keeper, state = _keeper(tmp_path, metric)
    for i, v in enumerate(values):
        state["step"] = step = 10 * (i + 1)
        keeper.observe(step, {key: v, "other": 0.0})
    present = [(v, 10 * (i + 1)) for i, v in enumerate(values) if v is not None]
    want_v, want_step = (max if metric == "sim" else min)(present, key=lambda p: p[0])  # the first of ties
    with open(tmp_path / "best" / "best.json") as f:
        best = json.load(f)
    assert (best["value"], best["step"], best["metric"]) == (want_v, want_step, metric)
    assert (tmp_path / "best" / "adapter" / "weights.txt").read_text() == str(want_step)
    assert not (tmp_path / "best.tmp").exists()
    again, _ = _keeper(tmp_path, metric)  # a resumed run starts from the saved best
    assert again.best == best and not again.observe(999, {key: want_v})


def test_metrics_deltas_and_sim_warning():
    from higgs_ds.evaluation.in_training import gen_metrics, sim_dropped

    rows = [{"sim": s, "dnsmos_ovrl": 3.0, "no_audio": False} for s in (0.80, 0.82, 0.84)]
    base = gen_metrics(rows)
    assert base["sim"] == pytest.approx(0.82) and "delta_sim" not in base and "wer" not in base
    close = gen_metrics([dict(r, sim=r["sim"] - 0.01) for r in rows], base)
    assert close["delta_sim"] == pytest.approx(-0.01) and not sim_dropped(close, base)  # within the CI (±0.05)
    far = gen_metrics([dict(r, sim=r["sim"] - 0.2) for r in rows] + [{"no_audio": True}], base)
    assert far["delta_sim"] == pytest.approx(-0.2) and sim_dropped(far, base) and far["no_audio"] == 0.25


def test_eval_prompt_is_the_sample_before_its_target(small_data):
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.evaluation.prompts import eval_prompts

    samples = list(read_chatml(small_data[0]))
    prompts = eval_prompts(samples, 3)
    raw = [json.loads(line) for line in open(small_data[0])][:3]
    for p, r in zip(prompts, raw):
        assert len(p.prompt.messages) == r["start_index"] == 4
        assert p.ref_audio == os.path.join(os.path.dirname(small_data[0]), r["messages"][2]["content"]["audio_url"])
        assert p.text == r["messages"][3]["content"] and p.speaker == r["speaker"]


@pytest.mark.parametrize("flags, message", [
    (["--keep_best", "sim"], "--keep_best sim needs --eval_generate_every N"),
    (["--keep_best", "wer", "--eval_generate_every", "2"], "--keep_best wer needs --asr_model DIR"),
    (["--keep_best", "loss"], "--keep_best loss needs --eval_every N"),
])
def test_flag_errors(flags, message, capsys):
    from higgs_ds.args import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_training_logs_eval_gen_and_agrees_with_evaluate(small_data, small_code_cache, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from higgs_ds.tools.evaluate import main as evaluate_main

    out = str(tmp_path / "run")
    run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--val_data", small_data[1],
             "--code_cache_dir", small_code_cache, "--max_steps", "2", "--learning_rate", "3e-3", "--output_dir", out,
             "--no_progress", "--eval_generate_every", "2", "--num_eval_prompts", "1", "--eval_max_new_tokens", "20",
             "--keep_best", "sim"])
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    gen = m["eval_gen"]
    assert [(r["step"], r["baseline"]) for r in gen] == [(0, True), (2, False)]
    assert all(-1 <= r["sim"] <= 1 and 1 <= r["dnsmos_ovrl"] <= 5 and "wer" not in r for r in gen)
    assert gen[1]["delta_sim"] == pytest.approx(gen[1]["sim"] - gen[0]["sim"])
    acc = EventAccumulator(os.path.join(out, "tensorboard")).Reload()
    assert [e.step for e in acc.Scalars("eval_gen/sim")] == [0, 2]
    assert [e.step for e in acc.Scalars("eval_gen/dnsmos_ovrl")] == [0, 2]
    assert m["best"] == {"metric": "sim", "key": "sim", "value": gen[1]["sim"], "step": 2}  # the baseline is not kept
    assert os.path.isfile(os.path.join(out, "best", "adapter", "adapter_config.json"))
    # train.py's final eval and `higgs-ds evaluate` on the saved adapter: one function, the same numbers
    assert evaluate_main(["--data", small_data[1], "--adapter", out, "--output", str(tmp_path / "e.json"),
                          "--batch_size", "1", "--generate", "--num_prompts", "1", "--max_new_tokens", "20"]) == 0
    e = json.load(open(tmp_path / "e.json"))
    assert e["loss_text"] == pytest.approx(m["val"]["loss/text"], rel=1e-5)
    assert e["loss_audio"] == pytest.approx(m["val"]["loss/audio"], rel=1e-5)
    assert e["audio_tokens"] == m["val"]["tokens/audio"]
    # --generate: base model = training's step-0 baseline, adapter = the step-2 eval (same prompt, greedy)
    g = e["generate"]
    assert g["base"]["rows"][0]["sim"] == pytest.approx(gen[0]["sim"], abs=1e-4)
    assert g["adapter"]["rows"][0]["sim"] == pytest.approx(gen[1]["sim"], abs=1e-4)
    assert g["adapter"]["mean"]["dnsmos_ovrl"]["mean"] == pytest.approx(gen[1]["dnsmos_ovrl"], abs=1e-4)
    assert list(g["adapter"]["by_speaker"]) == [g["adapter"]["rows"][0]["speaker"]]
    table = capsys.readouterr().out
    assert "adapter all" in table and "base all" in table and "wer/cer: not measured" in table

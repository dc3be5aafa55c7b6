"""How generations fail (evaluation/failures.py, evaluation/drift.py): the per-clip measures on planted audio and
codes, and a tiny model made to never stop, whose generation eval shows the metrics, the warning with its cause,
in the sinks, in metrics.json's records and in the model card."""
import contextlib
import json
import os

import numpy as np
import pytest
import torch

from tests.evaluation.espeak import synth


@pytest.fixture(scope="module")
def speech16k(tmp_path_factory):
    import librosa

    path = synth(str(tmp_path_factory.mktemp("sp") / "a.wav"), "The quick brown fox jumps over the lazy dog.", "us_m3")
    return librosa.load(path, sr=16000)[0]


def test_silence_ratio_counts_frames_without_speech(speech16k):
    from higgs_ds.evaluation.failures import silence_ratio

    speech = silence_ratio(speech16k)
    padded = silence_ratio(np.concatenate([speech16k, np.zeros(2 * len(speech16k), np.float32)]))
    assert speech < 0.4 and silence_ratio(np.zeros(16000, np.float32)) == 1.0
    # two thirds of the padded clip is silence: its ratio is the speech clip's third plus two thirds
    assert padded == pytest.approx(speech / 3 + 2 / 3, abs=0.03)


def test_repetition_and_stop_on_codes():
    from higgs_ds.evaluation.failures import frames_of, repetition, stopped

    k, size, bos, eos = 4, 64, 64, 65
    rng = np.random.default_rng(0)
    speech = rng.integers(0, size, (40, k))  # frames x codebooks
    loop = np.tile(rng.integers(0, size, (5, k)), (8, 1))  # a 5-frame fragment said 8 times

    def delayed(frames, end_eos=True):  # what the serve engine returns: BOS column, staircase, EOS fill
        t = len(frames)
        out = np.full((k, t + k + 1), eos)
        out[:, 0] = bos
        for c in range(k):
            out[c, 1:1 + c] = bos
            out[c, 1 + c:1 + c + t] = frames[:, c]
        return out if end_eos else out[:, :-k]  # cut by the budget before every codebook reached EOS

    assert (frames_of(delayed(speech), size) == speech).all()
    assert repetition(frames_of(delayed(speech), size)) == 0.0
    assert repetition(frames_of(delayed(loop), size)) == pytest.approx(32 / 37)  # all but the first 5 of 37 grams
    assert stopped(delayed(speech), eos) and not stopped(delayed(speech, end_eos=False), eos)


def test_drift_warnings_name_the_cause():
    from higgs_ds.evaluation.drift import drift_warnings

    base = {"stopped": 1.0, "stopped_ci95": None, "silence_ratio": 0.2, "silence_ratio_ci95": 0.05,
            "repetition": 0.0, "sim": 0.8, "sim_ci95": 0.02, "duration_ratio": 1.0, "no_audio": 0.0}
    same = dict(base, silence_ratio=0.24, sim=0.79)  # within CI / margin
    assert drift_warnings(same, base) == []
    bad = dict(base, stopped=0.0, silence_ratio=0.6, repetition=0.9, duration_ratio=3.0, sim=0.5)
    text = " | ".join(drift_warnings(bad, base))
    for cause in ("runaway generations", "growing silence", "looping", "much longer than expected",
                  "losing the voice"):
        assert cause in text


@contextlib.contextmanager
def eos_hook(model, mode, eot_id, after=24):
    """Make the audio head never emit the stream EOS (`never`), or emit it in every codebook from its `after`-th
    call on and then end the turn (`early`): a model that never stops, and one that always does."""
    cfg, head = model.config, model.audio_decoder_proj.audio_lm_head
    calls = {"n": 0}

    def end_turn(_, __, out):  # after the clip, the text head says <|eot_id|> (random text would go on)
        if mode == "early" and calls["n"] > after and out.numel():
            out.fill_(-1e9)
            out[..., eot_id] = 1e9
        return out

    def hook(_, __, out):
        if out.numel() == 0:  # a forward without audio-out positions (the prompt)
            return out
        logits = out.view(*out.shape[:-1], cfg.audio_num_codebooks, -1)
        calls["n"] += 1
        logits[..., cfg.audio_stream_eos_id] = -1e9
        if mode == "early" and calls["n"] > after:  # codebook 0 ends; the engine ends the others (delay pattern)
            logits[..., 0, cfg.audio_stream_eos_id] = 1e9
        return out

    def new_prompt(_, args, kwargs):  # the prompt's forward (more than one token) starts a new generation
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] > 1:
            calls["n"] = 0

    handles = [head.register_forward_hook(hook), model.register_forward_pre_hook(new_prompt, with_kwargs=True),
               model.audio_decoder_proj.text_lm_head.register_forward_hook(end_turn)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class SinkWriter:  # what StepMeter.write does: fan the scalars out to the sinks
    def __init__(self, sinks):
        self.sinks = sinks

    def write(self, scalars, step, prefix=""):
        self.sinks.scalars(scalars, step, prefix)


@pytest.mark.slow
def test_a_model_that_never_stops_is_reported(fresh_model, tiny_assets, small_data, tmp_path, caplog):
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.engine.sinks import build_sinks
    from higgs_ds.evaluation.in_training import GenerationEval
    from higgs_ds.evaluation.retention import retention_prompts
    from higgs_ds.evaluation.scorer import Scorer
    from higgs_ds.inference.model_card import card_facts, render
    from higgs_ds.models.loading import ModelPaths

    paths = ModelPaths.resolve(tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    sinks = build_sinks(0, None, str(tmp_path / "metrics.jsonl"))
    budget = 48
    gen = GenerationEval(fresh_model.eval(), paths, list(read_chatml(small_data[0])), 2, 2, Scorer(dnsmos=False),
                         SinkWriter(sinks), max_new_tokens=budget, retention=retention_prompts("default")[:1])
    eot = gen.engine.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    with torch.no_grad():
        with eos_hook(fresh_model, "early", eot):
            base = gen.run(0, baseline=True)
        with eos_hook(fresh_model, "never", eot):
            last = gen.run(2)
    sinks.close()
    assert base["stopped"] == 1.0 and last["stopped"] == 0.0
    assert last["repetition"] >= 0.0 and 0.0 <= last["silence_ratio"] <= 1.0
    assert last["duration_ratio"] > base["duration_ratio"]
    warnings = gen.records[-1]["warnings"]
    assert any("runaway generations" in w for w in warnings), warnings
    assert "runaway generations" in caplog.text and last["num_warnings"] == len(warnings) >= 1
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["step"], r["eval_gen/stopped"]) for r in lines] == [(0, 1.0), (2, 0.0)]
    # the retention prompt (no reference voice) fails the same way: retain/* against the base model's
    assert [(r["eval_gen/retain/stopped"], r["eval_gen/retain/no_audio"]) for r in lines] == [(1.0, 0.0), (0.0, 0.0)]
    assert "retain/sim" not in last and last["retain_drop"] >= 1.0
    assert last["sim_retain"] == pytest.approx(last["sim"] - last["retain_drop"])
    assert any(w.startswith("retention prompts") and "runaway generations" in w for w in warnings), warnings
    assert all("eval_gen/duration_ratio" in r and "eval_gen/repetition" in r for r in lines)
    # metrics.json (train.py writes the records under "eval_gen") -> the model card beside the adapter
    os.makedirs(tmp_path / "run" / "adapter")
    with open(tmp_path / "run" / "metrics.json", "w") as f:
        json.dump({"eval_gen": gen.records, "history": []}, f)
    facts = card_facts(str(tmp_path / "run" / "adapter"), tiny_assets.model_path, "boson")
    assert facts["generation"]["last"]["stopped"] == 0.0 and facts["generation"]["base"]["stopped"] == 1.0
    card = render(facts)
    assert "## Generation eval" in card and "runaway generations" in card


def test_retention_drop_and_keep_best_sim_retain(tmp_path):
    from higgs_ds.evaluation.best import BestKeeper
    from higgs_ds.evaluation.retention import retain_drop

    base = {"dnsmos_ovrl": 3.0, "stopped": 1.0, "wer": 0.2}
    assert retain_drop(dict(base, dnsmos_ovrl=3.4, wer=0.1), base) == 0.0  # better is no drop
    assert retain_drop({"dnsmos_ovrl": 2.0, "stopped": 0.5, "wer": 0.5}, base) == pytest.approx(0.25 + 0.5 + 0.3)
    saved = []
    keeper = BestKeeper("sim_retain", str(tmp_path), lambda d: (os.makedirs(d), saved.append(d)))
    # step 2 has the higher SIM but forgot the base model's skills; step 4 keeps them
    for step, sim, drop in ((2, 0.80, 0.5), (4, 0.70, 0.0)):
        keeper.observe(step, {"sim": sim, "retain_drop": drop, "sim_retain": sim - drop})
    assert keeper.best["step"] == 4 and keeper.best["metric"] == "sim_retain"


def test_retention_prompt_file_errors_name_the_line(tmp_path):
    from higgs_ds.errors import DataError
    from higgs_ds.evaluation.retention import retention_prompts

    assert len(retention_prompts("default")) == 3 and retention_prompts(None) == []
    f = tmp_path / "r.jsonl"
    f.write_text('{"text": "Hello there.", "scene": "A quiet room."}\n{"scene": "no text"}\n')
    with pytest.raises(DataError, match=f"{f}:2: expected"):
        retention_prompts(str(f))
    f.write_text('{"text": "Hello there."}\n')
    (p,) = retention_prompts(str(f))
    assert p.ref_audio is None and p.text == "Hello there." and p.prompt.messages[-1].content == "Hello there."

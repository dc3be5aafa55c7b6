"""Generation eval during training (higgs_ds/evaluation/in_training.py) and --keep_best: the metrics and the SIM
warning on planted rows, the best adapter on a planted metric sequence, flag checks, and a tiny training run that
logs eval_gen/* at step 0 (base model) and at every step, keeps the best adapter (regenerated on its own engine, it
scores what was logged), and whose final teacher-forced eval and generation scores equal `higgs-ds evaluate
[--generate]` on the saved adapter; the live engine follows the adapter (codes change, the baseline disables it);
scores move with what they score."""
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


@pytest.mark.slow  # real speaker and DNSMOS models on espeak-ng speech
def test_generated_clips_are_scored_against_their_prompt_reference(tmp_path):
    """generate_rows scores what the engine generated against the prompt's reference: the reference itself scores
    SIM near 1, another voice clearly less, white noise a far lower DNSMOS than speech; the SIM of a row is the
    plain cosine of resemblyzer embeddings of the two clips."""
    from types import SimpleNamespace

    import numpy as np

    from higgs_ds.data.audio import load_waveform
    from higgs_ds.evaluation.prompts import EvalPrompt, generate_rows
    from higgs_ds.evaluation.scorer import Scorer
    from higgs_ds.evaluation.speaker import ResemblyzerEmbedder, cosine
    from tests.evaluation import espeak

    wavs = espeak.corpus(str(tmp_path), voices=("us_m3", "gb_f3"), n_sentences=1)
    ref = wavs[("us_m3", 0)]
    said = {"itself": load_waveform(ref, 24000), "other_voice": load_waveform(wavs[("gb_f3", 0)], 24000),
            "noise": np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)}

    class Engine:  # "generates" the clip named by the prompt (codes: 8 codebooks x 5 frames, EOS last)
        model = SimpleNamespace(config=SimpleNamespace(audio_stream_eos_id=1025, audio_codebook_size=1024,
                                                       use_delay_pattern=False))

        def generate(self, prompt, **kwargs):
            codes = np.concatenate([np.arange(32).reshape(8, 4), np.full((8, 1), 1025)], axis=1)
            return SimpleNamespace(audio=said[prompt], sampling_rate=24000, generated_audio_tokens=codes)

    prompts = [EvalPrompt(name, ref, "The quick brown fox.", "us_m3", name) for name in said]
    rows = {r["sample_id"]: r for r in generate_rows(Engine(), prompts, Scorer())}
    assert rows["itself"]["sim"] > 0.95 and rows["itself"]["sim"] - rows["other_voice"]["sim"] > 0.1, rows
    assert min(rows["itself"]["dnsmos_ovrl"], rows["other_voice"]["dnsmos_ovrl"]) - rows["noise"]["dnsmos_ovrl"] > 1
    enc = ResemblyzerEmbedder()
    emb = [enc.embed(load_waveform(p, 16000)) for p in (wavs[("gb_f3", 0)], ref)]
    assert rows["other_voice"]["sim"] == pytest.approx(cosine(*emb), abs=0.02)  # 22.05 kHz -> 24 -> 16 vs -> 16


def _regenerated(paths, adapter, prompts, scorer):
    """Rows of the prompts cloned by an engine of its own on the base model with `adapter` merged into its weights
    (not the training run's live LoRA engine)."""
    from higgs_ds.evaluation.prompts import generate_rows
    from higgs_ds.inference.generate import load_engine

    engine = load_engine(paths.model_path, paths.audio_tokenizer_path, adapter=adapter, device="cpu")
    return generate_rows(engine, prompts, scorer, 20)


@pytest.mark.slow
def test_training_logs_eval_gen_and_agrees_with_evaluate(small_data, small_code_cache, tiny_assets, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from higgs_ds.assets import resolve_model_paths
    from higgs_ds.commands.evaluate import main as evaluate_main
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.evaluation.prompts import eval_prompts
    from higgs_ds.evaluation.scorer import Scorer

    out = str(tmp_path / "run")
    run_cmd([PYTHON, "higgs_ds/train.py", "--train_data", small_data[0], "--val_data", small_data[1],
             "--code_cache_dir", small_code_cache, "--max_steps", "3", "--learning_rate", "3e-3", "--output_dir", out,
             "--no_progress", "--eval_generate_every", "1", "--num_eval_prompts", "1", "--eval_max_new_tokens", "20",
             "--keep_best", "sim"])
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    gen = m["eval_gen"]
    assert [(r["step"], r["baseline"]) for r in gen] == [(0, True), (1, False), (2, False), (3, False)]
    assert all("wer" not in r for r in gen)
    assert all(r["delta_sim"] == pytest.approx(r["sim"] - gen[0]["sim"]) for r in gen[1:])
    assert len({r["sim"] for r in gen}) > 1  # the adapter being trained changed what was generated
    acc = EventAccumulator(os.path.join(out, "tensorboard")).Reload()
    assert [e.step for e in acc.Scalars("eval_gen/sim")] == [0, 1, 2, 3]
    assert [e.step for e in acc.Scalars("eval_gen/dnsmos_ovrl")] == [0, 1, 2, 3]
    # --keep_best sim: the best of steps 1-3 (the baseline is not kept; the first of ties), and the kept adapter,
    # merged into an engine of its own, generates what was scored at that step
    best_sim, best_step = max((r["sim"], -r["step"]) for r in gen[1:])
    assert m["best"] == {"metric": "sim", "key": "sim", "value": best_sim, "step": -best_step}
    paths = resolve_model_paths(tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    prompts = eval_prompts(read_chatml(small_data[1]), 1)
    scorer = Scorer()
    kept, final = (_regenerated(paths, d, prompts, scorer)[0] for d in (os.path.join(out, "best", "adapter"), out))
    # the same codes decode to the same clip, so the scores agree to float noise; the steps' SIMs may differ by only
    # ~3e-5 after 3 small steps, so 1e-6 is what tells the kept step's adapter from the others
    assert kept["sim"] == pytest.approx(best_sim, abs=1e-6)
    assert final["sim"] == pytest.approx(gen[-1]["sim"], abs=1e-6)
    assert final["dnsmos_ovrl"] == pytest.approx(gen[-1]["dnsmos_ovrl"], abs=1e-6)
    # train.py's final eval and `higgs-ds evaluate` on the saved adapter: one function, the same numbers
    assert evaluate_main(["--data", small_data[1], "--adapter", out, "--output", str(tmp_path / "e.json"),
                          "--batch_size", "1", "--generate", "--num_prompts", "1", "--max_new_tokens", "20"]) == 0
    e = json.load(open(tmp_path / "e.json"))
    assert e["loss_text"] == pytest.approx(m["val"]["loss/text"], rel=1e-5)
    assert e["loss_audio"] == pytest.approx(m["val"]["loss/audio"], rel=1e-5)
    assert e["audio_tokens"] == m["val"]["tokens/audio"]
    # --generate: base model = training's step-0 baseline, adapter = the last step's eval (same prompt, greedy)
    g = e["generate"]
    assert g["base"]["rows"][0]["sim"] == pytest.approx(gen[0]["sim"], abs=1e-4)
    assert g["adapter"]["rows"][0]["sim"] == pytest.approx(gen[-1]["sim"], abs=1e-4)
    assert g["adapter"]["mean"]["dnsmos_ovrl"]["mean"] == pytest.approx(gen[-1]["dnsmos_ovrl"], abs=1e-4)
    assert list(g["adapter"]["by_speaker"]) == [g["adapter"]["rows"][0]["speaker"]]
    table = capsys.readouterr().out
    assert "adapter all" in table and "base all" in table and "wer/cer: not measured" in table


class _CodesScorer:
    """A stand-in scorer: the generated waveform's mean magnitude as "sim" (no speaker model needed here)."""

    def score(self, wav, ref_wav, text=None, sr=16000, language=None):
        return {"sim": float(abs(wav).mean())}


def _generated_codes(engine, calls):
    """Wrap `engine.generate` so each call's generated audio codes are appended to `calls`."""
    generate = engine.generate

    def recording(*a, **k):
        resp = generate(*a, **k)
        calls.append(resp.generated_audio_tokens.copy())
        return resp

    engine.generate = recording


@pytest.mark.slow  # greedy generation through the serve engine, three times, and a merged copy once
def test_generation_eval_follows_the_live_adapter(fresh_model, tiny_assets, small_data):
    """GenerationEval's engine runs on the live training weights: after the adapter changes, the generated codes
    change; `baseline=True` disables the adapter (the step-0 codes again); and the live codes equal those of an
    independent engine on a merged copy of the adapted model (not the live one)."""
    import copy

    import numpy as np
    import torch

    from higgs_ds.assets import resolve_model_paths
    from higgs_ds.data.chatml import read_chatml
    from higgs_ds.evaluation.in_training import GenerationEval
    from higgs_ds.inference.generate import serve_engine
    from higgs_ds.models.lora import apply_lora

    paths = resolve_model_paths(tiny_assets.model_path, tiny_assets.audio_tokenizer_path)
    peft_model = apply_lora(fresh_model, r=4)
    gen = GenerationEval(peft_model, paths, list(read_chatml(small_data[1])), 1, 1, _CodesScorer(),
                         max_new_tokens=16)
    calls = []
    _generated_codes(gen.engine, calls)
    gen.run(0, baseline=True)
    torch.manual_seed(1)  # "training": every LoRA B moves away from 0, so the adapter now changes the model
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    gen.run(1)
    gen.run(1, baseline=True)
    base, tuned, base_again = calls
    assert base.size and tuned.size
    assert base.shape != tuned.shape or not np.array_equal(base, tuned)  # the live adapter changed the codes
    assert np.array_equal(base, base_again)  # adapter disabled: the base model's codes again
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    ref = serve_engine(paths.model_path, paths.audio_tokenizer_path, paths.tokenizer_path, device="cpu",
                       model=merged, kv_cache_lengths=[2048])
    prompt = gen.prompts[0]
    resp = ref.generate(prompt.prompt, max_new_tokens=16, temperature=0.0, force_audio_gen=True, ras_win_len=None)
    assert np.array_equal(resp.generated_audio_tokens, tuned)

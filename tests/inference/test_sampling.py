"""`higgs-ds sample` on the tiny model: seeded candidates (same seed, same codes; another k, other codes), the same
files on one rank and on two, and a run killed mid-way then rerun that loses and regenerates nothing."""
import json
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers import PYTHON, ROOT, run_cmd

K, TOKENS = 2, 30


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    from higgs_ds.data.synthetic import create_sample_data

    train, _ = create_sample_data(str(tmp_path_factory.mktemp("prompts")), num_samples=4, seed=3)
    return train  # 3 five-message samples


def _sample_cmd(prompts, out):
    return [PYTHON, "-m", "higgs_ds.cli", "sample", "--data", prompts, "--output", out, "--num_samples", str(K),
            "--max_new_tokens", str(TOKENS), "--seed", "5"]


def _files(out):
    """{relative path: bytes} of every wav and row, and the merged candidates.jsonl."""
    found = {}
    for sub in ("wavs", "rows"):
        for name in sorted(os.listdir(os.path.join(out, sub))):
            with open(os.path.join(out, sub, name), "rb") as f:
                found[f"{sub}/{name}"] = f.read()
    with open(os.path.join(out, "candidates.jsonl"), "rb") as f:
        found["candidates.jsonl"] = f.read()
    return found


@pytest.fixture(scope="module")
def one_rank(prompts, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one") / "cands")
    run_cmd(_sample_cmd(prompts, out))
    return out


def test_candidates_jsonl_is_a_score_request_file_with_the_candidate_fields(one_rank, prompts):
    from higgs_ds.inference.requests import read_requests

    rows = read_requests(os.path.join(one_rank, "candidates.jsonl"))
    assert [(r["prompt_index"], r["k"]) for r in rows] == [(i, k) for i in range(3) for k in range(K)]
    for r in rows:
        assert r["prompt"] == f"{prompts}:{r['prompt_index'] + 1}" and os.path.isfile(r["target_audio"])
        assert r["duration_s"] > 0 and isinstance(r["stopped"], bool) and r["ref_text"] and r["speaker"]
    assert len({r["seed"] for r in rows}) == len(rows)


def test_same_seed_same_codes_other_k_other_codes(tiny_assets, prompts, tmp_path):
    from higgs_ds.inference.candidates import read_prompts
    from higgs_ds.inference.generate import load_engine
    from higgs_ds.inference.sampling import SamplingConfig, generate_candidate

    engine = load_engine(tiny_assets.model_path, tiny_assets.audio_tokenizer_path, device="cpu")
    codes, generate = [], engine.generate

    def spy(*args, **kwargs):
        resp = generate(*args, **kwargs)
        codes.append(resp.generated_audio_tokens.tolist())
        return resp

    engine.generate = spy
    p, config = read_prompts(prompts)[0], SamplingConfig(K, 5, max_new_tokens=TOKENS)
    rows = [generate_candidate(engine, p, k, config, str(tmp_path / d)) for d, k in (("a", 0), ("b", 0), ("c", 1))]
    assert codes[0] == codes[1] and rows[0] == rows[1]
    assert codes[0] != codes[2] and rows[0]["seed"] != rows[2]["seed"]
    wavs = [(tmp_path / d / rows[0]["audio"]).read_bytes() for d in ("a", "b")]
    assert wavs[0] == wavs[1]


def test_two_ranks_give_exactly_the_one_rank_files(one_rank, prompts, tmp_path):
    out = str(tmp_path / "cands")
    procs = [subprocess.Popen(_sample_cmd(prompts, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"})
             for r in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "rank 1: 2 candidates generated" in logs[1]  # prompt 1 of 0, 1, 2
    assert _files(out) == _files(one_rank)


def test_killed_run_rerun_loses_nothing_and_regenerates_nothing(one_rank, prompts, tmp_path):
    out = str(tmp_path / "cands")
    killed = run_cmd(_sample_cmd(prompts, out), env={"HIGGS_DS_FAULT": "kill_mid_sample@4"}, check=False)
    assert killed.returncode == -9, killed.stdout[-3000:]
    assert not os.path.exists(os.path.join(out, "candidates.jsonl"))
    before = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in _files_so_far(out)}
    assert len([n for n in before if n.startswith("rows/")]) == 4
    rerun = run_cmd(_sample_cmd(prompts, out))
    assert "rank 0: 2 candidates generated, 4 already there" in rerun.stdout, rerun.stdout[-3000:]
    assert {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in before} == before
    assert _files(out) == _files(one_rank)


def _files_so_far(out):
    return [f"{sub}/{n}" for sub in ("wavs", "rows") for n in os.listdir(os.path.join(out, sub))]


def test_other_settings_in_the_same_output_dir_are_refused(one_rank, prompts, capsys):
    from higgs_ds.cli import main

    argv = _sample_cmd(prompts, one_rank)[3:] + ["--temperature", "0.7"]
    assert main(argv) == 78
    err = capsys.readouterr().err
    assert "temperature: [1.0] there, [0.7] now" in err and "Traceback" not in err


@pytest.mark.parametrize("line, says", [
    ("{not json", "prompts.jsonl:2: malformed JSON"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "prompts.jsonl:2 (sample line2): no assistant"),
])
def test_bad_prompt_file_is_one_error_naming_file_and_line(prompts, tmp_path, capsys, line, says):
    from higgs_ds.cli import main

    bad = tmp_path / "prompts.jsonl"
    with open(prompts) as f:
        first = json.loads(f.readline())
    for m in first["messages"]:  # the copy's audio paths must resolve from its own dir
        if isinstance(m["content"], dict):
            m["content"]["audio_url"] = os.path.join(os.path.dirname(prompts), m["content"]["audio_url"])
    bad.write_text(json.dumps(first) + "\n" + line + "\n")
    assert main(["sample", "--data", str(bad), "--output", str(tmp_path / "out")]) == 65
    err = capsys.readouterr().err
    assert err.startswith("error:") and says in err and "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "out")


class FakeEngine:
    """Answers every prompt with 0.1 s of audio that stopped (EOS in the codes), except `fail_seed`, whose
    generation fails as the serve engine does when it samples a text token the tokenizer lacks."""
    model = SimpleNamespace(config=SimpleNamespace(audio_stream_eos_id=1025))

    def __init__(self, fail_seed=None, message="Next generated token has max value 287 which is greater than the "
                                                "tokenizer's vocabulary size 270, this is undesired behavior."):
        self.fail_seed, self.message, self.seeds = fail_seed, message, []

    def generate(self, prompt, seed=None, **kwargs):
        assert kwargs["force_audio_gen"] and kwargs["temperature"] == 1.0
        self.seeds.append(seed)
        if seed == self.fail_seed:
            raise ValueError(self.message)
        return SimpleNamespace(audio=np.full(2400, 0.1, np.float32), sampling_rate=24000,
                               generated_audio_tokens=np.array([[7, 1025]]))


def test_a_failed_generation_is_recorded_left_out_and_counted(prompts, tmp_path):
    from higgs_ds.inference.candidates import merge_candidates, read_prompts
    from higgs_ds.inference.sampling import SamplingConfig, candidate_seed, sample_candidates

    ps, config, out = read_prompts(prompts), SamplingConfig(2, 5, max_new_tokens=10), str(tmp_path)
    engine = FakeEngine(fail_seed=candidate_seed(5, 1, 0))
    assert sample_candidates(engine, ps, config, out) == {"generated": 6, "skipped": 0, "no_audio": 1}
    assert merge_candidates(out, ps, 2) == {"candidates": 5, "no_audio": 1}
    with open(os.path.join(out, "candidates.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [(r["prompt_index"], r["k"]) for r in rows] == [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)]
    assert all(r["stopped"] and r["duration_s"] == pytest.approx(0.1) for r in rows)
    assert sample_candidates(engine, ps, config, out) == {"generated": 0, "skipped": 6, "no_audio": 0}
    assert len(engine.seeds) == 6  # the failed one is not retried either
    with pytest.raises(ValueError, match="something else"):
        sample_candidates(FakeEngine(candidate_seed(5, 0, 0), "something else"), ps, config, str(tmp_path / "b"))


def test_rank_zero_stops_waiting_for_a_rank_that_failed(prompts, tmp_path):
    import time

    from higgs_ds.inference.candidates import mark_failed, read_prompts
    from higgs_ds.inference.sampling import SamplingConfig, sample_candidates, wait_for_merge

    ps, out = read_prompts(prompts), str(tmp_path)
    sample_candidates(FakeEngine(), ps, SamplingConfig(2, 5), out, rank=0, world=2)
    mark_failed(out, 1, ValueError("boom"))
    marker = os.path.join(out, "failed", "rank1")
    os.utime(marker, (time.time() - 3600,) * 2)  # a marker of an earlier run: still waiting
    with pytest.raises(TimeoutError):
        _within(1.0, lambda: wait_for_merge(out, ps, 2, since=time.time() - 60, poll_s=0.01))
    os.utime(marker)
    with pytest.raises(RuntimeError, match=r"failed on rank\(s\) \[1\]"):
        _within(5.0, lambda: wait_for_merge(out, ps, 2, since=time.time() - 60, poll_s=0.01))


def _within(seconds, fn):
    """`fn()`, or TimeoutError after `seconds` (SIGALRM)."""
    import signal

    def stop(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_prompts_without_a_target_are_prompts_too(prompts, tmp_path):
    """The four-message form (ending with the text to say) is a prompt without a target; a sample ending with a user
    turn that is not that form keeps its error."""
    from higgs_ds.errors import DataError
    from higgs_ds.inference.candidates import read_prompts
    from higgs_ds.inference.sampling import SamplingConfig, sample_candidates

    with open(prompts) as f:
        rows = [json.loads(line) for line in f]
    for r in rows:  # the copy's audio paths must resolve from its own dir
        for m in r["messages"]:
            if isinstance(m["content"], dict):
                m["content"]["audio_url"] = os.path.join(os.path.dirname(prompts), m["content"]["audio_url"])
    short = {k: v for k, v in rows[0].items() if k != "start_index"} | {"messages": rows[0]["messages"][:4]}
    f = tmp_path / "prompts.jsonl"
    f.write_text(json.dumps(short) + "\n" + json.dumps(rows[1]) + "\n")
    ps = read_prompts(str(f))
    assert [(p.where, p.target_audio is None, p.text) for p in ps] == [
        (f"{f}:1", True, rows[0]["messages"][3]["content"]), (f"{f}:2", False, rows[1]["messages"][3]["content"])]
    sample_candidates(FakeEngine(), ps, SamplingConfig(2, 5), str(tmp_path / "out"))
    with open(tmp_path / "out" / "rows" / "000000_000.json") as fh:
        assert "target_audio" not in json.load(fh)
    bad = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}
    two_clips = {"messages": rows[1]["messages"] + [{"role": "user", "content": "more"}]}
    f.write_text(json.dumps(short) + "\n" + json.dumps(bad) + "\n" + json.dumps(two_clips) + "\n")
    with pytest.raises(DataError) as e:
        read_prompts(str(f))
    assert "2 bad sample(s) of 3" in str(e.value) and "prompts.jsonl:2 (sample line2): no assistant audio" in str(
        e.value) and "prompts.jsonl:3 (sample line3): not a voice-cloning prompt" in str(e.value)


def test_adapter_candidates_are_those_of_the_merged_model(one_rank, prompts, tiny_assets, fresh_model, tmp_path):
    """`sample --adapter DIR` (base model read from the adapter's config) gives exactly the files of `sample
    --model_path` on a merged copy saved as a full model, written by peft alone, and not the base model's."""
    import shutil

    import torch

    from higgs_ds.models.lora import apply_lora

    peft_model = apply_lora(fresh_model, r=4)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained adapter: every LoRA B away from 0
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter, merged = str(tmp_path / "adapter"), str(tmp_path / "merged")
    peft_model.save_pretrained(adapter)
    shutil.copytree(tiny_assets.model_path, merged)  # config and tokenizer; the weights are replaced
    peft_model.merge_and_unload().save_pretrained(merged, safe_serialization=True)
    first = os.path.join(os.path.dirname(prompts), "first.jsonl")  # prompt 0 alone: the same seeds, fewer generations
    with open(prompts) as f, open(first, "w") as out:
        out.write(f.readline())
    audio = ["--audio_tokenizer_path", tiny_assets.audio_tokenizer_path]
    run_cmd(_sample_cmd(first, str(tmp_path / "a")) + ["--adapter", adapter] + audio)
    run_cmd(_sample_cmd(first, str(tmp_path / "m")) + ["--model_path", merged] + audio)
    with_adapter, on_merged, base = (_files(o) for o in (str(tmp_path / "a"), str(tmp_path / "m"), one_rank))
    wavs = sorted(n for n in with_adapter if n.startswith("wavs/"))
    assert len(wavs) == K
    assert [with_adapter[n] for n in wavs] == [on_merged[n] for n in wavs]
    assert [with_adapter[n] for n in wavs] != [base[n] for n in wavs]

"""`higgs-ds sample` on the tiny model: seeded candidates (same seed, same codes; another k, other codes), the same
files on one rank and on two, and a run killed mid-way then rerun that loses and regenerates nothing."""
import json
import os
import subprocess

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

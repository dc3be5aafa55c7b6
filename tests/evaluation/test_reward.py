"""The pair rule of `higgs-ds pairs` against a naive reference written here from docs/PREFERENCE.md, on hand-made
score tables (best vs worst, min gap, ties, missing ASR, prompts without a target), and its file errors."""
import json
import math
import random
import zlib

import pytest


def naive_pairs(cands, scores, w, min_gap):
    """Reference: reward per candidate by the documented formula, then per prompt best vs worst."""
    asr = False
    for s in scores:
        if "error_rate" in s:
            asr = True
    by_prompt = {}
    for c, s in zip(cands, scores):
        r = w["sim"] * s["sim"] + w["dnsmos"] * s["dnsmos_ovrl"]
        if asr:
            r = r - w["wer"] * s["error_rate"]
        if c.get("target_duration_s"):
            r = r - w["duration"] * abs(math.log(c["duration_s"]) - math.log(c["target_duration_s"]))
        if c["stopped"]:
            r = r + w["stop"]
        by_prompt.setdefault(c["prompt_index"], []).append((r, c["k"], c["audio"]))
    pairs, dropped = [], {"one_candidate": 0, "tie": 0, "below_min_gap": 0}
    for p in sorted(by_prompt):
        group = by_prompt[p]
        if len(group) == 1:
            dropped["one_candidate"] += 1
            continue
        hi = sorted(group, key=lambda g: (-g[0], g[1]))[0]
        lo = sorted(group, key=lambda g: (g[0], g[1]))[0]
        if hi[0] == lo[0]:
            dropped["tie"] += 1
        elif hi[0] - lo[0] < min_gap:
            dropped["below_min_gap"] += 1
        else:
            pairs.append((hi[2], lo[2], hi[0], lo[0]))
    return pairs, dropped


def table(seed, asr, n_prompts=80):
    """Candidates and scores: 1-4 candidates per prompt, some prompts all scored alike (ties), some untargeted;
    values chosen so that different scores never add up to the same reward."""
    rng = random.Random(seed)
    cands, scores = [], []
    for p in range(n_prompts):
        target = rng.choice([None, 2.0])
        same = rng.random() < 0.15  # every candidate of the prompt scored alike: a tie
        first = None
        for k in range(rng.randint(1, 4)):
            vals = first or (rng.choice([0.51, 0.73, 0.97]), rng.choice([2.013, 3.11]), rng.choice([0.0, 0.237]),
                             rng.choice([1.0, 2.0, 3.0]), rng.random() < 0.5)
            first = vals if same else None
            sim, dnsmos, err, dur, stopped = vals
            cands.append({"audio": f"/c/{p}_{k}.wav", "prompt_index": p, "k": k, "duration_s": dur,
                          "stopped": stopped, "ref_audio": "/r.wav", "ref_text": "ref", "text": f"t{p}",
                          "prompt": f"p.jsonl:{p + 1}", **({"target_duration_s": target} if target else {})})
            scores.append({"audio": f"/c/{p}_{k}.wav", "sim": sim, "dnsmos_ovrl": dnsmos,
                           **({"error_rate": err} if asr else {})})
    return cands, scores


@pytest.mark.parametrize("asr", [True, False])
@pytest.mark.parametrize("min_gap", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("weights", ["", "sim=2,wer=0.5,dnsmos=1,duration=0.25,stop=0.5"])
def test_build_pairs_equals_the_naive_rule(asr, min_gap, weights):
    from higgs_ds.evaluation.reward import build_pairs, parse_weights

    w = parse_weights(weights)
    cands, scores = table(zlib.crc32(f"{asr} {min_gap} {weights}".encode()), asr)
    pairs, counts = build_pairs(cands, scores, w, min_gap)
    want, dropped = naive_pairs(cands, scores, w, min_gap)
    got = [(p["messages"][4]["content"]["audio_url"], p["rejected"]["audio_url"], p["reward_chosen"],
            p["reward_rejected"]) for p in pairs]
    assert [g[:2] for g in got] == [x[:2] for x in want]
    assert [v for g in got for v in g[2:]] == pytest.approx([v for x in want for v in x[2:]])
    assert counts == {"prompts": 80, "pairs": len(want), "no_pair": dropped}
    assert dropped["one_candidate"] and dropped["tie"] and (min_gap == 0 or dropped["below_min_gap"])


def test_hand_made_prompt_best_vs_worst():
    from higgs_ds.evaluation.reward import build_pairs

    cands = [{"audio": f"/{k}.wav", "prompt_index": 0, "k": k, "duration_s": d, "stopped": s, "target_duration_s": 2.0,
              "ref_audio": "/r.wav", "ref_text": "r", "text": "t", "speaker": "spk", "language": "en"}
             for k, d, s in ((0, 2.0, True), (1, 4.0, True), (2, 2.0, False))]
    scores = [{"sim": 0.8, "dnsmos_ovrl": 3.0}, {"sim": 0.9, "dnsmos_ovrl": 3.0}, {"sim": 0.8, "dnsmos_ovrl": 3.0}]
    (pair,), counts = build_pairs(cands, scores)
    # rewards: 0.8 + 1.5 + 1 = 3.3; 0.9 + 1.5 - ln 2 + 1 = 2.707; 0.8 + 1.5 = 2.3
    assert pair["messages"][4]["content"]["audio_url"] == "/0.wav" and pair["rejected"]["audio_url"] == "/2.wav"
    assert pair["reward_chosen"] == pytest.approx(3.3) and pair["reward_rejected"] == pytest.approx(2.3)
    assert pair["start_index"] == 4 and pair["speaker"] == "spk" and pair["language"] == "en"
    assert counts["pairs"] == 1


def test_a_weighted_score_missing_from_a_row_is_an_error():
    from higgs_ds.errors import DataError
    from higgs_ds.evaluation.reward import build_pairs

    cands, scores = table(1, False, 3)
    del scores[1]["sim"]
    with pytest.raises(DataError, match="have no sim"):
        build_pairs(cands, scores)
    build_pairs(cands, scores, {"sim": 0})  # a term weighted 0 needs no score


def test_bad_weights():
    from higgs_ds.errors import ConfigError
    from higgs_ds.evaluation.reward import parse_weights

    assert parse_weights("sim=2, stop=0")["stop"] == 0.0 and parse_weights("sim=2")["dnsmos"] == 0.5
    for bad in ("foo=1", "sim=x", "sim"):
        with pytest.raises(ConfigError):
            parse_weights(bad)


@pytest.fixture
def files(tmp_path):
    """A candidates.jsonl (two prompts x two candidates, wavs present) and its scores.json."""
    cands, scores = [], []
    for p in range(2):
        for k in range(2):
            (tmp_path / f"{p}_{k}.wav").write_bytes(b"")
            cands.append({"audio": f"{p}_{k}.wav", "ref_audio": f"{p}_{k}.wav", "text": "t", "ref_text": "r",
                          "prompt": f"p.jsonl:{p + 1}", "prompt_index": p, "k": k, "seed": 1, "duration_s": 1.0,
                          "stopped": bool(k)})
            scores.append({"audio": str(tmp_path / f"{p}_{k}.wav"), "sim": 0.5 + k / 10, "dnsmos_ovrl": 3.0})
    c, s = tmp_path / "candidates.jsonl", tmp_path / "scores.json"
    c.write_text("".join(json.dumps(x) + "\n" for x in cands))
    s.write_text(json.dumps({"rows": scores, "backends": {"asr": None}}, indent=1))
    return c, s, cands, scores


def test_pairs_command_writes_pairs_and_counts(files, tmp_path, capsys):
    from higgs_ds.cli import main

    c, s, _, _ = files
    assert main(["pairs", "--candidates", str(c), "--scores", str(s), "--output", str(tmp_path / "p.jsonl"),
                 "--min_gap", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs written" in out and "prompts without a pair: 0" in out
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["messages"][4]["content"]["audio_url"] for r in rows] == [str(tmp_path / "0_1.wav"),
                                                                         str(tmp_path / "1_1.wav")]
    assert main(["pairs", "--candidates", str(c), "--scores", str(s), "--output", str(tmp_path / "p.jsonl"),
                 "--min_gap", "2"]) == 0
    assert "0 pairs written" in capsys.readouterr().out and (tmp_path / "p.jsonl").read_text() == ""


def test_a_candidate_outside_the_data_checks_limits_is_in_no_pair(files, tmp_path, capsys):
    """The best candidate of prompt 0 lasts 0.04 s (a clip the data checks refuse): prompt 0 keeps one candidate
    and gets no pair, prompt 1 its pair; the count is printed."""
    from higgs_ds.cli import main

    c, s, cands, _ = files
    cands[1]["duration_s"] = 0.04
    c.write_text("".join(json.dumps(x) + "\n" for x in cands))
    assert main(["pairs", "--candidates", str(c), "--scores", str(s), "--output", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "1 pairs written" in out and "one_candidate 1" in out and "duration limits, in no pair: 1" in out
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["messages"][4]["content"]["audio_url"] for r in rows] == [str(tmp_path / "1_1.wav")]


@pytest.mark.parametrize("case, says", [
    ("fewer_scores", "scores.json: 3 score rows for the 4 candidates of"),
    ("other_audio", "candidates.jsonl:3: candidate"),
    ("not_json", "scores.json:1: not valid JSON"),
    ("no_rows", "scores.json: not a `higgs-ds score` output"),
    ("bad_candidate", "candidates.jsonl:2: not a candidate row of `higgs-ds sample`: missing or bad k"),
    ("missing_sim", "scores.json: the scores of candidate k=0 of p.jsonl:2 have no sim"),
])
def test_candidates_and_scores_that_do_not_match(files, tmp_path, capsys, case, says):
    from higgs_ds.cli import main

    c, s, cands, scores = files
    if case == "fewer_scores":
        s.write_text(json.dumps({"rows": scores[:3]}))
    elif case == "other_audio":
        s.write_text(json.dumps({"rows": scores[:2] + scores[3:1:-1]}))
    elif case == "not_json":
        s.write_text("{rows")
    elif case == "no_rows":
        s.write_text(json.dumps([1]))
    elif case == "bad_candidate":
        del cands[1]["k"]
        c.write_text("".join(json.dumps(x) + "\n" for x in cands))
    else:
        del scores[2]["sim"]
        s.write_text(json.dumps({"rows": scores}))
    assert main(["pairs", "--candidates", str(c), "--scores", str(s), "--output", str(tmp_path / "p.jsonl")]) == 65
    err = capsys.readouterr().err
    assert err.startswith("error:") and says in err and "Traceback" not in err, err
    assert not (tmp_path / "p.jsonl").exists()


def test_round_weights_name_only_their_terms_and_refuse_model_terms():
    """`--round_weights stop=1` weighs stopping alone (an unnamed term is 0, not the `higgs-ds pairs` default); a
    term that needs a scoring model is refused naming the flag."""
    from higgs_ds.errors import ConfigError
    from higgs_ds.evaluation.round_config import RoundsConfig

    assert RoundsConfig().weights() == {"sim": 0, "wer": 0, "dnsmos": 0, "duration": 1, "stop": 1}
    assert RoundsConfig(round_weights="stop=1").weights() == {"sim": 0, "wer": 0, "dnsmos": 0, "duration": 0,
                                                              "stop": 1}
    with pytest.raises(ConfigError, match="--round_weights: sim need scoring models"):
        RoundsConfig(round_weights="stop=1,sim=0.5").weights()
    with pytest.raises(ConfigError, match="--round_weights: unknown term 'pitch'"):
        RoundsConfig(round_weights="pitch=1").weights()


def test_a_candidate_without_audio_scores_as_a_silent_clip_that_did_not_stop():
    """A clip too short to decode (`"no_audio": true`, no duration or stop fields) is the worst duration and no stop:
    a round's held-out mean counts it, so a policy collapsing to silence scores low instead of being left out."""
    from higgs_ds.evaluation.reward import parse_weights, reward_terms
    from higgs_ds.recipes.rounds import mean_reward

    weights = parse_weights("duration=1,stop=1", base=dict.fromkeys(("sim", "wer", "dnsmos"), 0.0))
    silent = {"audio": None, "no_audio": True, "target_duration_s": 2.0, "k": 0}
    assert reward_terms(silent, {}, weights, False) == {"duration": -math.log(2.0 / 1e-3), "stop": 0.0}
    spoken = {"audio": "a.wav", "duration_s": 2.0, "stopped": True, "target_duration_s": 2.0, "k": 1}
    assert mean_reward([spoken, silent], weights) == pytest.approx((1.0 - math.log(2.0 / 1e-3)) / 2)

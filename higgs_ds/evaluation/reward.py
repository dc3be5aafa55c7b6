"""The reward of a scored candidate and the preference pairs built from it (`higgs-ds pairs`, docs/PREFERENCE.md).

    reward = w_sim · SIM                                      voice: speaker similarity to the reference clip
           − w_wer · error_rate         (scores with ASR)     content: WER, or CER for Chinese/Japanese/Korean/Thai
           + w_dnsmos · DNSMOS OVRL                           quality: 1..5, no reference needed
           − w_duration · |ln(duration / target duration)|    (prompts with a target clip) length: 0 when equal
           + w_stop · stopped                                 1 when the model ended the clip before the budget

A candidate without audio (`"no_audio": true`: a clip too short to decode) scores as a 0 s clip that did not stop.
A term whose weight is 0 is left out (its score is then not needed). Per prompt the candidate with the highest
reward is chosen and the one with the lowest rejected (among equal rewards, the lowest k). A prompt gives no pair
when it has fewer than two candidates (`one_candidate`), when the two rewards are equal (`tie`), or when their gap
is below `min_gap` (`below_min_gap`).
"""
import math

from ..errors import ConfigError, DataError

WEIGHTS = {"sim": 1.0, "wer": 1.0, "dnsmos": 0.5, "duration": 1.0, "stop": 1.0}
NO_PAIR = ("one_candidate", "tie", "below_min_gap")


def parse_weights(text=None, base=None, flag="--weights"):
    """`sim=1,wer=1,...` over `base` (default `WEIGHTS`); an unknown term or a bad number is a ConfigError."""
    weights = dict(WEIGHTS if base is None else base)
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, _, value = item.partition("=")
        if key not in WEIGHTS:
            raise ConfigError(f"{flag}: unknown term {key!r} (terms: {', '.join(WEIGHTS)})")
        try:
            weights[key] = float(value)
        except ValueError:
            raise ConfigError(f"{flag}: {item!r} is not term=number") from None
    return weights


def _need(score, key, cand):
    if not isinstance(score.get(key), (int, float)):
        raise DataError(f"the scores of candidate k={cand.get('k')} of {cand.get('prompt')} have no {key}", "scores")
    return float(score[key])


def reward_terms(cand, score, weights, asr):
    """{term: weighted value} of one candidate (a candidates.jsonl row) and its score row; `asr`: use the error rate."""
    w, terms = weights, {}
    if w["sim"]:
        terms["sim"] = w["sim"] * _need(score, "sim", cand)
    if w["wer"] and asr:
        terms["wer"] = -w["wer"] * _need(score, "error_rate", cand)
    if w["dnsmos"]:
        terms["dnsmos"] = w["dnsmos"] * _need(score, "dnsmos_ovrl", cand)
    if w["duration"] and cand.get("target_duration_s"):  # a candidate without audio: 0 s
        seconds = cand.get("duration_s", 0.0)
        terms["duration"] = -w["duration"] * abs(math.log(max(seconds, 1e-3) / cand["target_duration_s"]))
    if w["stop"]:  # a candidate without audio did not stop on a clip
        terms["stop"] = w["stop"] * float(bool(cand.get("stopped", False)))
    return terms


def build_pairs(candidates, scores, weights=None, min_gap=0.0):
    """(pair samples, counts) from candidate rows (`higgs-ds sample`'s candidates.jsonl) and their score rows
    (`Scorer.score_requests(...)["rows"]`, same order). The error-rate term is used when the scores have ASR.
    counts: {"prompts", "pairs", "no_pair": {reason: n}}; each pair is a ChatML line `train.py --stage dpo` reads."""
    weights = parse_weights() if weights is None else {**WEIGHTS, **weights}
    if len(candidates) != len(scores):
        raise DataError(f"{len(scores)} score rows for {len(candidates)} candidates", "scores")
    asr = any("error_rate" in s for s in scores)
    groups = {}
    for cand, score in zip(candidates, scores):
        groups.setdefault(cand["prompt_index"], []).append((sum(reward_terms(cand, score, weights, asr).values()),
                                                            cand["k"], cand))
    pairs, no_pair = [], dict.fromkeys(NO_PAIR, 0)
    for group in groups.values():
        reason = _no_pair(group, min_gap)
        if reason:
            no_pair[reason] += 1
            continue
        best = max(group, key=lambda g: (g[0], -g[1]))
        worst = min(group, key=lambda g: (g[0], g[1]))
        pairs.append(pair_sample(best, worst))
    return pairs, {"prompts": len(groups), "pairs": len(pairs), "no_pair": no_pair}


def _no_pair(group, min_gap):
    rewards = [g[0] for g in group]
    if len(group) < 2:
        return "one_candidate"
    if max(rewards) == min(rewards):
        return "tie"
    return "below_min_gap" if max(rewards) - min(rewards) < min_gap else None


def pair_sample(best, worst):
    """The DPO pair of two (reward, k, candidate): the chosen clip as the target turn, the other as `rejected`."""
    from ..data.samples import voice_cloning_sample

    (r_best, _, c), (r_worst, _, w) = best, worst
    sample = voice_cloning_sample(c["ref_audio"], c["ref_text"], c["audio"], c["text"], c.get("speaker"))
    if c.get("language"):
        sample["language"] = c["language"]
    return {"id": f"prompt{c['prompt_index']}", **sample, "rejected": {"type": "audio", "audio_url": w["audio"]},
            "prompt": c.get("prompt"), "chosen_k": c["k"], "rejected_k": w["k"], "reward_chosen": r_best,
            "reward_rejected": r_worst}


def within_limits(candidates, validation=None):
    """Indices of the candidates a pair may hold: within the data checks' duration limits (`validation`: a
    `ValidationConfig`, its defaults when None); a clip of a frame or two is refused by the audio checks."""
    from ..data.validate import ValidationConfig

    v = validation or ValidationConfig()
    return [i for i, c in enumerate(candidates) if v.min_audio_seconds <= c["duration_s"] <= v.max_audio_seconds]

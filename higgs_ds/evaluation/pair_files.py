"""`higgs-ds pairs` on files: candidates.jsonl (`higgs-ds sample`) and the scores of exactly that file (`higgs-ds
score --requests DIR/candidates.jsonl`) -> a pair file for `train.py --stage dpo` (the rule: evaluation/reward.py)."""
import json
import os

from ..durable import write_atomic
from ..errors import DataError
from ..inference.requests import read_requests
from .reward import build_pairs, within_limits

CANDIDATE_FIELDS = {"prompt_index": int, "k": int, "ref_text": str, "duration_s": (int, float), "stopped": bool}


def read_candidates(path):
    """The rows of a candidates.jsonl; a DataError naming file:line for a bad or incomplete row."""
    rows = read_requests(path)
    for r in rows:
        bad = [k for k, kind in CANDIDATE_FIELDS.items() if not _is(r.get(k), kind)]
        if bad:
            raise DataError(f"{path}:{r['line']}: not a candidate row of `higgs-ds sample`: missing or bad "
                            f"{', '.join(bad)}", "candidates", path, r["line"])
    return rows


def _is(value, kind):
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def read_scores(path):
    """The rows of a `higgs-ds score --output` file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: scores file not found", "missing_file", path)
    with open(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", "json", path, e.lineno) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("rows"), list):
        raise DataError(f"{path}: not a `higgs-ds score` output (no \"rows\" list)", "scores", path)
    return obj["rows"]


def check_match(candidates, scores, candidates_path, scores_path):
    """Each score row must score the candidate on the same line (score candidates.jsonl as it is)."""
    if len(scores) != len(candidates):
        raise DataError(f"{scores_path}: {len(scores)} score rows for the {len(candidates)} candidates of "
                        f"{candidates_path}; score that file as it is (higgs-ds score --requests {candidates_path})",
                        "scores", scores_path)
    for i, (c, s) in enumerate(zip(candidates, scores)):
        if not isinstance(s, dict) or not isinstance(s.get("audio"), str) or not _same(s["audio"], c["audio"]):
            got = s.get("audio") if isinstance(s, dict) else s
            raise DataError(f"{candidates_path}:{c['line']}: candidate {c['audio']} does not match score row {i + 1} "
                            f"of {scores_path} ({got})", "scores", candidates_path, c["line"])


def pairs_from_files(candidates_path, scores_path, output, weights=None, min_gap=0.0):
    """Read, match, build and write the pairs (atomically, JSONL); returns `build_pairs`'s counts."""
    candidates, scores = read_candidates(candidates_path), read_scores(scores_path)
    check_match(candidates, scores, candidates_path, scores_path)
    keep = within_limits(candidates)  # a too short or too long clip would fail the pair file's data checks
    candidates, scores, outside = [candidates[i] for i in keep], [scores[i] for i in keep], len(candidates) - len(keep)
    try:
        pairs, counts = build_pairs(candidates, scores, weights, min_gap)
        counts["outside_limits"] = outside
    except DataError as e:
        raise DataError(f"{scores_path}: {e}", e.kind, scores_path) from None
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_atomic(output, "".join(json.dumps(p) + "\n" for p in pairs))
    return counts


def summary(counts, output):
    """The lines `higgs-ds pairs` prints."""
    reasons = ", ".join(f"{k} {v}" for k, v in counts["no_pair"].items())
    return (f"{counts['pairs']} pairs written to {output} from {counts['prompts']} prompts\n"
            f"prompts without a pair: {sum(counts['no_pair'].values())} ({reasons}); candidates outside the data "
            f"checks' duration limits, in no pair: {counts.get('outside_limits', 0)}")


def _same(a, b):
    return os.path.realpath(a) == os.path.realpath(b)

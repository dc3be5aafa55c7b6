"""Means with a 95 % confidence interval (Student t), as every score table reports them."""
import math

import numpy as np


def mean_ci(values, level=0.95):
    """{"mean", "ci95", "n"} of the finite values; ci95 is the t-interval half-width (None below two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = None
    if x.size > 1:
        half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": float(x.mean()), "ci95": half, "n": int(x.size)}


def summarize(rows, keys):
    """mean_ci of each key over the rows that have it."""
    return {k: mean_ci([r.get(k) for r in rows]) for k in keys if any(r.get(k) is not None for r in rows)}


def language_of(row):
    """A scored row's language: its sample's tag, else the one Whisper detected, else "unknown"."""
    return row.get("language") or row.get("asr_language") or "unknown"


def summarize_named(rows, keys):
    """`summarize`, with the row count ("n_rows") and, when the rows carry one, what their `error_rate` is
    ("error_rate_name": error_rate_label)."""
    out = {"n_rows": len(rows), **summarize(rows, keys)}
    if "error_rate" in out:
        out["error_rate_name"] = error_rate_label(rows)
    return out


def grouped(rows, keys, group):
    """{group: summarize_named(its rows)} in sorted order; `group(row)` names a row's group."""
    out = {}
    for r in rows:
        out.setdefault(str(group(r)), []).append(r)
    return {g: summarize_named(rs, keys) for g, rs in sorted(out.items())}


def breakdown(rows, keys):
    """{"by_language": ..., "by_speaker": ...}: every mean per language and per speaker."""
    return {"by_language": grouped(rows, keys, language_of),
            "by_speaker": grouped(rows, keys, lambda r: r.get("speaker") or "unknown")}


def error_rate_label(rows):
    """What a mean of the rows' `error_rate` is: "wer", "cer", or "wer+cer" for a mix (read it per language)."""
    names = sorted({r["error_rate_name"] for r in rows if r.get("error_rate") is not None}, reverse=True)
    return "+".join(names) or None


def flat_breakdown(rows, keys):
    """`language/<tag>/<key>` and `speaker/<id>/<key>` means (for TensorBoard and metrics.json)."""
    out = {}
    for kind, groups in breakdown(rows, keys).items():
        for g, s in groups.items():
            out.update({f"{kind[3:]}/{g}/{k}": s[k]["mean"] for k in keys if s.get(k, {}).get("mean") is not None})
    return out

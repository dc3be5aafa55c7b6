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

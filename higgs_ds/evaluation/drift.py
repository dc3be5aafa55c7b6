"""A run drifting from its baseline (the base model on the same prompts): which generation metrics moved the wrong
way by more than their 95 % CI (or a minimum margin), and the cause in words."""

# key, +1 when a rise is bad / -1 when a fall is bad, minimum change that counts, the cause in words
DRIFTS = (
    ("stopped", -1, 0.1, "runaway generations: fewer clips end with EOS before the token budget (the model does not "
                         "stop talking)"),
    ("duration_ratio", +1, 0.25, "generations much longer than expected for their text (runaway or stalling "
                                 "speech)"),
    ("silence_ratio", +1, 0.1, "growing silence: more of each clip has no speech for the VAD"),
    ("repetition", +1, 0.1, "looping: generated codes repeat earlier fragments"),
    ("no_audio", +1, 0.1, "more prompts produce no audio at all"),
    ("sim", -1, 0.0, "falling SIM: the adapter is losing the voice"),
)


def drifted(metrics, baseline, key, sign, margin):
    """True when `metrics[key]` moved from the baseline in the bad direction by more than max(CI, margin)."""
    if not baseline or baseline.get(key) is None or metrics.get(key) is None:
        return False
    ci = metrics.get(f"{key}_ci95") or baseline.get(f"{key}_ci95") or 0.0
    return sign * (metrics[key] - baseline[key]) > max(ci, margin)


def drift_warnings(metrics, baseline):
    """[message] for each metric that drifted from the baseline; each names the metric, both values and the cause."""
    out = []
    for key, sign, margin, cause in DRIFTS:
        if drifted(metrics, baseline, key, sign, margin):
            out.append(f"{key} {metrics[key]:.3f} vs the base model's {baseline[key]:.3f}: {cause}")
    return out


def flat(summary):
    """{"k": mean, "k_ci95": ci95} of a `stats.summarize` result (the layout `drift_warnings` reads); entries that
    are not a summary (`n_rows`, `error_rate_name`) are skipped."""
    out = {}
    for k, m in summary.items():
        if isinstance(m, dict) and m.get("mean") is not None:
            out[k], out[f"{k}_ci95"] = m["mean"], m["ci95"]
    return out

"""`higgs-ds evaluate --generate`: clone a prompt set with the adapter and with its base model (the same weights,
adapter disabled), score both and print a seed-tts-eval-style table: SIM, WER (with an ASR dir), DNSMOS OVRL,
mean ± 95 % CI, overall and per speaker."""
from .failures import KEYS as FAILURE_KEYS
from .scorer import METRICS
from .stats import summarize

TABLE_METRICS = ("sim", "wer", "dnsmos_ovrl")
SUMMARY_KEYS = METRICS + FAILURE_KEYS + ("no_audio",)


def by_speaker(rows):
    out = {}
    for r in rows:
        out.setdefault(r["speaker"], []).append(r)
    return {s: summarize(rs, SUMMARY_KEYS) for s, rs in sorted(out.items())}


def generate_systems(model, paths, prompts, scorer, max_new_tokens=512):
    """{"adapter": rows, "base": rows} for a peft model, {"model": rows} for a bare one."""
    from ..inference.preview import live_engine
    from .prompts import generate_rows

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    engine = live_engine(base, paths)
    model.eval()
    if base is model:
        return {"model": generate_rows(engine, prompts, scorer, max_new_tokens)}
    out = {"adapter": generate_rows(engine, prompts, scorer, max_new_tokens)}
    with model.disable_adapter():
        out["base"] = generate_rows(engine, prompts, scorer, max_new_tokens)
    return out


def summarize_systems(systems):
    """Per system: rows, means with CI (scores and failure measures), per speaker; the adapter's `warnings` where it
    drifted from the base model (evaluation/drift.py)."""
    from .drift import drift_warnings, flat

    out = {name: {"rows": rows, "mean": summarize(rows, SUMMARY_KEYS), "by_speaker": by_speaker(rows)}
           for name, rows in systems.items()}
    if "base" in out:
        out["adapter"]["warnings"] = drift_warnings(flat(out["adapter"]["mean"]), flat(out["base"]["mean"]))
    return out


def _cell(m):
    if m is None or m["mean"] is None:
        return f"{'-':>15}"
    ci = "" if m["ci95"] is None else f" ± {m['ci95']:.3f}"
    return f"{m['mean']:.3f}{ci}".rjust(15)


def format_generation_table(summary, asr=False, per_speaker=True):
    """One line per system and speaker: n, SIM, WER (or a note that it needs --asr_model), DNSMOS OVRL, and how the
    generations failed (duration ratio, stop rate, silence, repetition); then the adapter's drift warnings."""
    metrics = [k for k in TABLE_METRICS if asr or k != "wer"] + list(FAILURE_KEYS)
    lines = [f"{'system':<8} {'speaker':<14} {'n':>3} " + " ".join(f"{k:>15}" for k in metrics)]
    for name, s in summary.items():
        groups = [("all", s["mean"], len(s["rows"]))]
        groups += [(spk, m, sum(r["speaker"] == spk for r in s["rows"])) for spk, m in s["by_speaker"].items()
                   if per_speaker]
        for spk, m, n in groups:
            lines.append(f"{name:<8} {spk[:14]:<14} {n:>3} " + " ".join(_cell(m.get(k)) for k in metrics))
    if not asr:
        lines.append("wer: not measured (no --asr_model DIR given)")
    lines += [f"warning: {w}" for s in summary.values() for w in s.get("warnings", [])]
    return "\n".join(lines)

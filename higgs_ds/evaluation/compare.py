"""`higgs-ds evaluate --generate`: clone a prompt set with the adapter and with its base model (the same weights,
adapter disabled), score both and print a seed-tts-eval-style table: SIM, the language's error rate (WER or CER,
with an ASR dir), DNSMOS OVRL and how the generations failed, mean ± 95 % CI, overall, per language and per
speaker."""
from .failures import KEYS as FAILURE_KEYS
from .scorer import METRICS, group_table
from .stats import breakdown, summarize_named

SUMMARY_KEYS = METRICS + FAILURE_KEYS + ("no_audio",)


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
    """Per system: rows, means with CI (scores and failure measures), per language and per speaker; the adapter's
    `warnings` where it drifted from the base model (evaluation/drift.py)."""
    from .drift import drift_warnings, flat

    out = {name: {"rows": rows, "mean": summarize_named(rows, SUMMARY_KEYS), **breakdown(rows, SUMMARY_KEYS)}
           for name, rows in systems.items()}
    if "base" in out and "adapter" in out:
        out["adapter"]["warnings"] = drift_warnings(flat(out["adapter"]["mean"]), flat(out["base"]["mean"]))
    return out


def format_generation_table(summary, asr=False, per_group=True):
    """One line per system and group (all, then each language and speaker unless `per_group` is off): n, SIM, error
    rate named wer/cer (or a note that it needs --asr_model), DNSMOS OVRL, and how the generations failed (duration
    ratio, stop rate, silence, repetition); then the adapter's drift warnings."""
    groups = []
    for name, s in summary.items():
        groups.append((f"{name} all", s["mean"]))
        if per_group:
            groups += [(f"{name} language {g}", m) for g, m in s["by_language"].items()]
            groups += [(f"{name} speaker {g}", m) for g, m in s["by_speaker"].items()]
    lines = group_table(groups, asr, head="system / group", extra=FAILURE_KEYS)
    if not asr:
        lines.append("wer/cer: not measured (no --asr_model DIR given)")
    lines += [f"warning: {w}" for s in summary.values() for w in s.get("warnings", [])]
    return "\n".join(lines)

"""`higgs-ds evaluate --generate`: clone a prompt set with the adapter and with its base model (the same weights,
adapter disabled), score both and print a seed-tts-eval-style table: SIM, the language's error rate (WER or CER,
with an ASR dir), DNSMOS OVRL, mean ± 95 % CI, overall, per language and per speaker."""
from .scorer import METRICS, group_table
from .stats import breakdown, summarize_named


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
    """{system: {"rows", "mean", "by_language", "by_speaker"}}."""
    return {name: {"rows": rows, "mean": summarize_named(rows, METRICS), **breakdown(rows, METRICS)}
            for name, rows in systems.items()}


def format_generation_table(summary, asr=False):
    """One line per system and group (all, each language, each speaker): n, SIM, error rate named wer/cer (or a
    note that it needs --asr_model), DNSMOS OVRL."""
    groups = []
    for name, s in summary.items():
        groups.append((f"{name} all", s["mean"]))
        groups += [(f"{name} language {g}", m) for g, m in s["by_language"].items()]
        groups += [(f"{name} speaker {g}", m) for g, m in s["by_speaker"].items()]
    lines = group_table(groups, asr, head="system / group")
    if not asr:
        lines.append("wer/cer: not measured (no --asr_model DIR given)")
    return "\n".join(lines)

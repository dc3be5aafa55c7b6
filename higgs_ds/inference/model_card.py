"""README.md (a Hub model card) for an exported dir: base model and revision, data, training setup, final metrics.

Facts come from files, never from memory: the adapter's adapter_config.json, the training run's metrics.json
(written by train.py next to adapter/: args, the data validation reports, loss history, held-out metrics), and the
base model dir (a hub-cache snapshot path names its repo and revision; a converted dir names its source).
"""
import json
import os

from ..models import hub
from ..models.convert import SOURCE_FILE

LAST_METRICS = ("loss/total", "loss/text", "loss/audio")
QUALITY = ("sim", "error_rate", "dnsmos_ovrl")  # generation eval's table metrics (evaluation/scorer.py)
GEN_METRICS = ("sim", "error_rate", "dnsmos_ovrl", "duration_ratio", "stopped", "silence_ratio", "repetition",
               "no_audio", "retain/dnsmos_ovrl", "retain/stopped", "retain_drop")


def _read(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def base_model_facts(base_dir):
    """{"repo", "revision"} for a hub snapshot, {"path", "converted_from"} otherwise."""
    ref = hub.ref_from_path(base_dir)
    if ref:
        return {"repo": ref.repo_id, "revision": ref.revision}
    source = _read(os.path.join(base_dir, SOURCE_FILE))
    facts = {"path": os.path.abspath(base_dir)}
    if source:
        facts["converted_from"] = source["source"]
        ref = hub.parse_ref(source["source"])
        if ref:
            facts.update(repo=ref.repo_id, revision=ref.effective_revision)
    return facts


def card_facts(adapter_dir, base_dir, fmt, exported_adapter_dir=None):
    """Everything the card states, as a dict (also what tests check). LoRA facts come from the exported adapter
    (`exported_adapter_dir`, native module names) when there is one."""
    adapter = _read(os.path.join(exported_adapter_dir or adapter_dir, "adapter_config.json")) or {}
    run = _read(os.path.join(os.path.dirname(os.path.abspath(adapter_dir)), "metrics.json")) or {}
    history = run.get("history") or []
    args = run.get("args") or {}
    return {
        "format": fmt, "base_model": base_model_facts(base_dir),
        "lora": {k: adapter.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")},
        "training": {k: args[k] for k in ("learning_rate", "num_epochs", "batch_size", "gradient_accumulation_steps",
                                          "max_steps", "seed", "loss_normalization", "lora_preset") if k in args},
        "world_size": run.get("world_size"), "steps": len(history),
        "data": run.get("data") or {}, "train_data": run.get("train_data"), "val_data": run.get("val_data"),
        "final_train": {k: round(history[-1][k], 4) for k in LAST_METRICS if history and k in history[-1]},
        "final_val": {k: round(v, 4) for k, v in (run.get("val") or {}).items() if k.startswith(("loss/", "acc/"))},
        "quality": quality_facts(run.get("eval_gen") or []),
        "generation": generation_facts(run.get("eval_gen") or []),
    }


def quality_facts(records):
    """The last generation eval's table metrics, overall and per language and speaker (`language/<tag>/sim`
    keys of in_training.gen_metrics): {"step", "error_rate_name", "groups": {group: {metric: value}}}; {} without."""
    if not records:
        return {}
    last, groups = records[-1], {}
    for key, v in last.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in ("language", "speaker") and parts[2] in QUALITY:
            groups.setdefault(f"{parts[0]} {parts[1]}", {})[parts[2]] = round(v, 4)
    overall = {k: round(last[k], 4) for k in QUALITY if last.get(k) is not None}
    return {"step": last.get("step"), "baseline": bool(last.get("baseline")),
            "error_rate_name": last.get("error_rate_name"), "groups": {"all": overall, **groups}}


def _quality(q):
    """The card's generation-quality section (empty without a generation eval)."""
    if not q:
        return []
    what = "the base model (no training step evaluated)" if q["baseline"] else f"step {q['step']}"
    name = q["error_rate_name"] or "not measured (no --asr_model)"
    lines = ["## Generation quality", "", f"Generation eval of {what}: SIM, error rate ({name}; CER for Chinese, "
             "Japanese, Korean, Thai, WER elsewhere), DNSMOS OVRL; means per language and speaker.", "",
             "| group | " + " | ".join(QUALITY) + " |", "|---" * (len(QUALITY) + 1) + "|"]
    lines += [f"| {g} | " + " | ".join(str(m.get(k, "-")) for k in QUALITY) + " |" for g, m in q["groups"].items()]
    return lines + [""]


def generation_facts(records):
    """The base model's generation eval beside the last one (scores and failure measures) and its warnings; {}
    when the run had no generation eval."""
    base = next((r for r in records if r.get("baseline")), None)
    last = next((r for r in reversed(records) if not r.get("baseline")), None)
    if last is None:
        return {}
    return {"step": last["step"], "base": _rounded(base), "last": _rounded(last),
            "warnings": last.get("warnings") or []}


def _rounded(record):
    return {k: round(record[k], 4) for k in GEN_METRICS if record and record.get(k) is not None}


def _generation_section(g):
    if not g:
        return []
    rows = [f"| {k} | {g['base'].get(k, '-')} | {g['last'].get(k, '-')} |" for k in GEN_METRICS
            if k in g["base"] or k in g["last"]]
    warn = [f"- warning: {w}" for w in g["warnings"]] or ["- no drift from the base model detected"]
    return ["## Generation eval", "", f"| metric | base model | step {g['step']} |", "|---|---|---|", *rows, "",
            *warn, ""]


def _usage(fmt):
    if fmt == "transformers":
        return ("```python\nfrom transformers import HiggsAudioV2ForConditionalGeneration\n"
                "model = HiggsAudioV2ForConditionalGeneration.from_pretrained(\"<this dir>\", use_text_head=True)\n"
                "```\nThe LoRA adapter alone (native module names) is in `adapter/` (`peft.PeftModel.from_pretrained`"
                " on the native base model).")
    return ("```python\nfrom boson_multimodal.serve.serve_engine import HiggsAudioServeEngine\n"
            "engine = HiggsAudioServeEngine(\"<this dir>\", \"<audio tokenizer dir>\")\n```")


def _table(d):
    return "\n".join(f"| {k} | {v} |" for k, v in d.items()) or "| - | - |"


def _languages(report):
    """", samples per language: vi 10, en 2" when the data names languages."""
    langs = report.get("languages") or {}
    if not any(k != "(none)" for k in langs):
        return ""
    return ", samples per language: " + ", ".join(f"{k} {v}" for k, v in langs.items())


def render(facts):
    base = facts["base_model"]
    base_line = (f"`{base['repo']}` at revision `{base['revision']}`" if "repo" in base else f"`{base['path']}`")
    if "converted_from" in base:
        base_line += f" (converted from the transformers-native `{base['converted_from']}`)"
    front = ["---", "library_name: " + ("transformers" if facts["format"] == "transformers" else "boson-multimodal"),
             "tags: [text-to-speech, voice-cloning, higgs-audio, lora]"]
    if "repo" in base:
        front.append(f"base_model: {base['repo']}")
    paths = {"train": facts["train_data"], "val": facts["val_data"]}
    data = "\n".join(f"- `{split}` (`{paths.get(split)}`): {r.get('samples_ok')} samples ({r.get('samples_bad')} rejected), "
                     f"{r.get('speakers')} speakers, {r.get('audio_hours')} h of audio, tokens per sample p50 "
                     f"{(r.get('token_length') or {}).get('p50')} / max {(r.get('token_length') or {}).get('max')}"
                     + _languages(r) for split, r in facts["data"].items()) \
        or f"- train: `{facts['train_data']}` (no report recorded)"
    return "\n".join(front + ["---", "", "# Higgs Audio v2 voice-cloning fine-tune (higgs_ds)", "",
                              f"Base model: {base_line}. Layout: {facts['format']}.", "", "## Data", "", data, "",
                              "## Training", "", "| setting | value |", "|---|---|",
                              _table({**facts["training"], "world_size": facts["world_size"],
                                      "optimizer steps": facts["steps"]}), "",
                              "LoRA: " + ", ".join(f"{k}={v}" for k, v in facts["lora"].items()), "",
                              "## Final metrics", "", "| metric | value |", "|---|---|",
                              _table({**{f"train {k}": v for k, v in facts["final_train"].items()},
                                      **{f"val {k}": v for k, v in facts["final_val"].items()}}), "",
                              *_quality(facts["quality"]), *_generation_section(facts.get("generation")), "## Use",
                              "", _usage(facts["format"]), ""])


def write_model_card(output, adapter_dir, base_dir, fmt, exported_adapter_dir=None):
    facts = card_facts(adapter_dir, base_dir, fmt, exported_adapter_dir)
    with open(os.path.join(output, "README.md"), "w") as f:
        f.write(render(facts))
    return facts

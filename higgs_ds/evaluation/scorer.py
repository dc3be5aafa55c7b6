"""`Scorer`: the backends of `higgs-ds score` behind one call, scoring a generated clip against its reference
and target text. Used by the CLI, by generation eval during training and by `higgs-ds evaluate --generate`."""
import logging

import numpy as np

from .stats import breakdown, summarize_named

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # every backend takes 16 kHz mono
METRICS = ("sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "wer", "cer", "error_rate")
LOWER_IS_BETTER = ("wer", "cer", "error_rate")
TABLE_METRICS = ("sim", "error_rate", "dnsmos_ovrl")


def resample(wav, sr):
    """Mono float32 at 16 kHz."""
    import librosa

    wav = np.asarray(wav, dtype=np.float32)
    return wav if sr == SAMPLE_RATE else librosa.resample(wav, orig_sr=sr, target_sr=SAMPLE_RATE)


class Scorer:
    """SIM (resemblyzer, or WavLM from `sim_model`), DNSMOS (speechmos) and, with `asr_model`, Whisper WER/CER."""

    def __init__(self, sim_model=None, asr_model=None, device="cpu", dnsmos=True):
        from .dnsmos import DnsmosScorer
        from .speaker import ResemblyzerEmbedder, WavLMEmbedder

        self.embedder = WavLMEmbedder.load(sim_model, device) if sim_model else ResemblyzerEmbedder(device)
        self.dnsmos = DnsmosScorer() if dnsmos else None
        self.asr = None
        if asr_model:
            from .asr import WhisperASR

            self.asr = WhisperASR.load(asr_model, device)

    @property
    def backends(self):
        return {"sim": self.embedder.name, "dnsmos": self.dnsmos.name if self.dnsmos else None,
                "asr": self.asr.name if self.asr else None}

    def score(self, wav, ref_wav, text=None, sr=SAMPLE_RATE, ref_sr=SAMPLE_RATE, language=None):
        """One row: sim (not without a reference clip), dnsmos_* and (with an ASR model and a text) transcript,
        asr_language, wer, cer, error_rate (asr.py); `language`: the text's language tag (None: Whisper detects it)."""
        from .speaker import similarity

        wav = resample(wav, sr)
        row = {} if ref_wav is None else {"sim": similarity(self.embedder, wav, resample(ref_wav, ref_sr))}
        if self.dnsmos is not None:
            row.update(self.dnsmos.score(wav))
        if self.asr is not None and text:
            row.update(self.asr.score(wav, text, language))
        return row

    def score_requests(self, requests):
        """{"rows": [...] in request order, "mean": {metric: {mean, ci95, n}}, "by_language", "by_speaker" (the
        same per group), "backends": {...}}."""
        from ..data.audio import load_waveform

        rows = []
        for i, req in enumerate(requests):
            where = f"request {req.get('line', i + 1)}"
            wav = load_waveform(req["audio"], SAMPLE_RATE, where)
            ref = load_waveform(req["ref_audio"], SAMPLE_RATE, where)
            rows.append({**req, **self.score(wav, ref, req.get("text"), language=req.get("language"))})
        return {"rows": rows, "mean": summarize_named(rows, METRICS), **breakdown(rows, METRICS),
                "backends": self.backends}


def cell(m, name=None):
    """`mean ± ci95` of one summary entry (and the error rate's name), right-aligned; "-" when absent."""
    if m is None or m["mean"] is None:
        return f"{'-':>19}"
    ci = "" if m["ci95"] is None else f" ± {m['ci95']:.3f}"
    return (f"{m['mean']:.3f}{ci}" + (f" {name}" if name else "")).rjust(19)


def group_table(groups, asr=True, head="group", extra=()):
    """Lines of a table with one line per (label, summary): n, SIM, error rate (named wer/cer), DNSMOS OVRL, then
    the `extra` keys."""
    metrics = [k for k in TABLE_METRICS if asr or k != "error_rate"] + list(extra)
    lines = [f"{head:<24} {'n':>3} " + " ".join(f"{k:>19}" for k in metrics)]
    for label, s in groups:
        lines.append(f"{label[:24]:<24} {s['n_rows']:>3} " + " ".join(
            cell(s.get(k), s.get("error_rate_name") if k == "error_rate" else None) for k in metrics))
    return lines


def format_table(result):
    """Plain-text tables of a `score_requests` result: each metric's mean ± 95 % CI and n, then the table per
    language and per speaker (and a note that WER needs --asr_model)."""
    mean, asr = result["mean"], bool(result["backends"].get("asr"))
    lines = [f"{'metric':<22} {'mean':>8} {'± ci95':>8} {'n':>5}"]
    for k in METRICS:
        if k in mean:
            m, name = mean[k], f"{k} ({mean['error_rate_name']})" if k == "error_rate" else k
            ci = "-" if m["ci95"] is None else f"{m['ci95']:.3f}"
            lines.append(f"{name:<22} {m['mean']:>8.3f} {ci:>8} {m['n']:>5}")
    groups = [(f"language {g}", s) for g, s in result["by_language"].items()]
    groups += [(f"speaker {g}", s) for g, s in result["by_speaker"].items()]
    lines += [""] + group_table(groups, asr)
    if not asr:
        lines.append("wer/cer: not measured (no --asr_model DIR given)")
    return "\n".join(lines)

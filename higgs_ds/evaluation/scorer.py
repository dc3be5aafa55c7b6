"""`Scorer`: the backends of `higgs-ds score` behind one call, scoring a generated clip against its reference
and target text. Used by the CLI, by generation eval during training and by `higgs-ds evaluate --generate`."""
import logging

import numpy as np

from .stats import summarize

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # every backend takes 16 kHz mono
METRICS = ("sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "wer", "cer")
LOWER_IS_BETTER = ("wer", "cer")


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

    def score(self, wav, ref_wav, text=None, sr=SAMPLE_RATE, ref_sr=SAMPLE_RATE):
        """One row: sim (not without a reference clip), dnsmos_* and (with an ASR model and a text) transcript, wer,
        cer."""
        from .speaker import similarity

        wav = resample(wav, sr)
        row = {} if ref_wav is None else {"sim": similarity(self.embedder, wav, resample(ref_wav, ref_sr))}
        if self.dnsmos is not None:
            row.update(self.dnsmos.score(wav))
        if self.asr is not None and text:
            row.update(self.asr.score(wav, text))
        return row

    def score_requests(self, requests):
        """{"rows": [...] in request order, "mean": {metric: {mean, ci95, n}}, "backends": {...}}."""
        from ..data.audio import load_waveform

        rows = []
        for i, req in enumerate(requests):
            where = f"request {req.get('line', i + 1)}"
            wav = load_waveform(req["audio"], SAMPLE_RATE, where)
            ref = load_waveform(req["ref_audio"], SAMPLE_RATE, where)
            rows.append({**req, **self.score(wav, ref, req.get("text"))})
        return {"rows": rows, "mean": summarize(rows, METRICS), "backends": self.backends}


def format_table(mean, backends=None):
    """Plain-text table: metric, mean ± 95 % CI, n (and a note that WER needs --asr_model)."""
    lines = [f"{'metric':<12} {'mean':>8} {'± ci95':>8} {'n':>5}"]
    for k in METRICS:
        if k in mean:
            m = mean[k]
            ci = "-" if m["ci95"] is None else f"{m['ci95']:.3f}"
            lines.append(f"{k:<12} {m['mean']:>8.3f} {ci:>8} {m['n']:>5}")
    if backends is not None and not backends.get("asr"):
        lines.append("wer/cer: not measured (no --asr_model DIR given)")
    return "\n".join(lines)

"""Quality columns of a prepared dataset, computed once at prepare time (`--quality`): per sample, measures of its
target clip (the audio it trains on) — duration, peak, clipping ratio, leading / trailing / longest internal
silence, DNSMOS and the CER / WER of an ASR model against its transcript when those scorers are injected — and the
pair similarity of the pair check. Stored in
`DIR/quality.arrow`, one row per sample, read by the training filters (filters.py) without re-running a scorer."""
import dataclasses
from typing import Optional

import numpy as np

from ..config import option
from ..errors import DataError

SILENCE_DBFS = -40.0  # a 20 ms frame whose RMS is below this (re full scale) is silence
FRAME_SECONDS = 0.02
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
COLUMNS = ("duration", "peak", "clipping", "lead_silence", "trail_silence", "internal_silence", "dnsmos", "cer",
           "wer", "pair_sim")


@dataclasses.dataclass
class QualityConfig:
    """`higgs-ds prepare` flags of the quality columns."""
    quality: bool = option(False, "store quality columns per sample in DIR/quality.arrow (its target clip's "
                                  "duration, peak, clipping ratio, leading/trailing/internal silence; pair_sim with "
                                  "--check_pairs) for train-time --filter rules; each clip measured once")
    dnsmos: bool = option(False, "also DNSMOS (overall MOS) per target clip in the quality columns (about 2.5 s "
                                 "per clip on one core; implies --quality)")
    asr_model: Optional[str] = option(None, "local Whisper dir: also the CER and WER of each target clip's transcript "
                                            "in the quality columns, transcribed in the sample's language and "
                                            "normalised as `higgs-ds score` does (implies --quality)", type=str,
                                      metavar="WHISPER_DIR")

    def enabled(self):
        return self.quality or self.dnsmos or self.asr_model is not None


def clip_quality(wav, rate):
    """{duration, peak, clipping, lead_silence, trail_silence, internal_silence} of a mono waveform (seconds for
    the durations; clipping: the share of samples at full scale)."""
    wav = np.asarray(wav, dtype=np.float32)
    duration = len(wav) / rate
    if not len(wav):
        return {"duration": 0.0, "peak": 0.0, "clipping": 0.0, "lead_silence": 0.0, "trail_silence": 0.0,
                "internal_silence": 0.0}
    hop = max(1, int(FRAME_SECONDS * rate))
    frames = wav[:len(wav) // hop * hop].reshape(-1, hop)
    loud = 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-10) > SILENCE_DBFS
    if loud.any():
        first, last = int(np.argmax(loud)), len(loud) - 1 - int(np.argmax(loud[::-1]))
        lead, trail = first * hop / rate, duration - (last + 1) * hop / rate
        internal = _longest_run(~loud[first:last + 1]) * hop / rate
    else:
        lead, trail, internal = duration, duration, 0.0
    return {"duration": round(duration, 4), "peak": round(float(np.max(np.abs(wav))), 4),
            "clipping": round(float(np.mean(np.abs(wav) >= CLIP_LEVEL)), 6), "lead_silence": round(lead, 4),
            "trail_silence": round(trail, 4), "internal_silence": round(internal, 4)}


def _longest_run(mask):
    """The length of the longest run of True in a boolean array."""
    best = run = 0
    for x in mask:
        run = run + 1 if x else 0
        best = max(best, run)
    return best


def target_text(sample):
    """The text the target clip says: the last user text before `start_index` (the voice-cloning layout)."""
    texts = [c for m in sample.messages[:sample.start_index or 0] if m.role == "user"
             for c in (m.content if isinstance(m.content, list) else [m.content]) if hasattr(c, "text")]
    return texts[-1].text if texts else None


def _measure(it, target, rate, dnsmos, asr):
    """The COLUMNS of one target clip (all null when it does not decode: validation names it)."""
    from .audio import load_waveform

    try:
        wav = load_waveform(target, rate, it.where)
    except DataError:
        return {}
    out = {**clip_quality(wav, rate), "dnsmos": dnsmos(wav) if dnsmos else None}
    text = target_text(it.sample)
    if asr is not None and text:
        out.update({k: v for k, v in asr(wav, text, it.language).items() if k in ("cer", "wer")})
    return out


def quality_rows(items, pair_sims=None, dnsmos=None, rate=16000, asr=None):
    """One dict per good sample of `items`: `source` (file:line), `sample_id` and the COLUMNS of its target clip
    (each distinct clip measured once). `pair_sims`: {sample where: similarity}; `dnsmos(wav16k) -> float` and
    `asr(wav16k, text, language) -> {"cer", "wer", ...}` or None (their columns are then null). A clip that does
    not decode gets nulls (validation names it)."""
    from .pair_check import pair_clips

    measured, rows = {}, []
    for it in items:
        clips = None if isinstance(it, DataError) else pair_clips(it.sample)
        if clips is None:
            continue
        target = clips[1]
        if target not in measured:
            measured[target] = _measure(it, target, rate, dnsmos, asr)
        rows.append({"source": f"{it.file}:{it.line}", "sample_id": it.sample_id, **measured[target],
                     "pair_sim": (pair_sims or {}).get(it.where)})
    return rows


def write_quality(path, rows):
    """`rows` as an Arrow IPC stream (float64 columns, null where not measured), written atomically."""
    import pyarrow as pa

    from ..durable import write_atomic

    table = pa.table({"source": pa.array([r["source"] for r in rows], pa.string()),
                      "sample_id": pa.array([r["sample_id"] for r in rows], pa.string()),
                      **{c: pa.array([r.get(c) for r in rows], pa.float64()) for c in COLUMNS}})

    def write(f):
        with pa.ipc.new_stream(f, table.schema) as writer:
            writer.write_table(table)

    write_atomic(path, write, ".tmp")

"""Synthetic voice-cloning data: speech-like 24 kHz audio from a few "speakers" and five-message ChatML JSONL.

Each speaker has its own pitch and formants; an utterance is a sequence of voiced syllables (harmonic source with
jittered pitch, a formant filter, a syllable envelope) separated by short pauses, plus a little noise.
"""
import json
import os

import numpy as np
import soundfile as sf

from ..constants import SAMPLE_RATE
from .samples import voice_cloning_sample

WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars glow above "
         "quiet rivers and old towns remember every song people sing at night").split()


def speech_like(rng, seconds, f0=140.0, formants=(700.0, 1200.0, 2600.0), sr=SAMPLE_RATE):
    """A float32 waveform in [-1, 1] that sounds vaguely like speech (voiced syllables and pauses)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    source = sum(np.sin(k * phase) / k for k in range(1, 12))
    spec = np.fft.rfft(source)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    shaped = sum(np.exp(-0.5 * ((freqs - f) / (80 + 0.06 * f)) ** 2) for f in formants)
    voiced = np.fft.irfft(spec * shaped, n)
    syllable = rng.uniform(0.12, 0.25)
    env = np.clip(np.sin(np.pi * (t % syllable) / syllable), 0, None) ** 1.5
    env *= (rng.random(int(np.ceil(seconds / syllable)) + 1) > 0.2)[(t // syllable).astype(int)]
    wave = voiced * env + 0.003 * rng.standard_normal(n)
    return (0.6 * wave / (np.abs(wave).max() + 1e-8)).astype(np.float32)


def _speakers(num_speakers, rng):
    return [dict(f0=float(rng.uniform(90, 250)), formants=tuple(float(x) for x in
                 (rng.uniform(500, 900), rng.uniform(1000, 1600), rng.uniform(2200, 3000))))
            for _ in range(num_speakers)]


def _sentence(rng, lo=3, hi=8):
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1)))).capitalize() + "."


def create_sample_data(out_dir, num_samples=32, num_speakers=4, val_fraction=0.125, seed=0,
                       min_seconds=0.5, max_seconds=1.2):
    """Write `wavs/*.wav`, `train.jsonl` and `val.jsonl` under `out_dir`; return the two JSONL paths.

    Audio paths in the JSONL are relative to the JSONL file's directory.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "wavs"), exist_ok=True)
    speakers = _speakers(num_speakers, rng)
    samples = []
    for i in range(num_samples):
        spk = i % num_speakers
        clips = []
        for role in ("ref", "tgt"):
            rel = f"wavs/s{i:04d}_{role}.wav"
            sf.write(os.path.join(out_dir, rel), speech_like(rng, rng.uniform(min_seconds, max_seconds),
                                                             **speakers[spk]), SAMPLE_RATE, subtype="PCM_16")
            clips.append(rel)
        samples.append(voice_cloning_sample(clips[0], _sentence(rng), clips[1], _sentence(rng), f"speaker_{spk}"))
    n_val = max(1, int(round(num_samples * val_fraction))) if num_samples > 1 else 0
    paths = {}
    for split, rows in (("train", samples[: num_samples - n_val]), ("val", samples[num_samples - n_val:])):
        paths[split] = os.path.join(out_dir, f"{split}.jsonl")
        with open(paths[split], "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return paths["train"], paths["val"]

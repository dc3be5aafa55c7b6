"""Audio reading with one set of checks (missing, undecodable, empty, non-finite), used by validation (probe) and
by loading/encoding exactly as `HiggsAudioServeEngine._prepare_inputs` does it (`librosa.load(path, sr=24000)`).
Heavy imports (librosa, torch) are lazy so that validation starts fast."""
import dataclasses
import os

import numpy as np

from ..errors import DataError


@dataclasses.dataclass
class AudioInfo:
    seconds: float
    sample_rate: int
    channels: int


def _checked_read(path, where, read):
    """`read(path) -> (wav, sr)` with the shared checks; every failure is a `DataError` naming `where` and `path`."""
    prefix = f"{where}: " if where else ""
    if not os.path.isfile(path):
        raise DataError(f"{prefix}audio file not found: {path}", "missing_audio")
    try:
        wav, sr = read(path)
    except ImportError:  # a broken install, not a broken file
        raise
    except Exception as e:  # soundfile/audioread raise many types for undecodable files
        raise DataError(f"{prefix}cannot decode audio {path}: {type(e).__name__}: {e}", "corrupt_audio") from None
    if wav.size == 0:
        raise DataError(f"{prefix}audio file is empty (0 samples): {path}", "empty_audio")
    if not np.isfinite(wav).all():
        raise DataError(f"{prefix}audio {path} has non-finite samples (NaN or inf)", "nonfinite_audio")
    return wav, sr


def _read_native(path):
    """(samples x channels float32, native rate): soundfile, else librosa/audioread for other formats."""
    import soundfile as sf

    try:
        return sf.read(path, always_2d=True, dtype="float32")
    except Exception:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead."
            wav, sr = librosa.load(path, sr=None, mono=False)
        return (wav.reshape(-1, wav.shape[-1]).T if wav.size else wav.reshape(0, 1)), sr


def probe_audio(path, where=""):
    """Decode `path` fully at its native rate; its duration, rate and channels, or a `DataError`."""
    wav, sr = _checked_read(path, where, _read_native)
    return AudioInfo(wav.shape[0] / sr, int(sr), int(wav.shape[1]))


def header_seconds(path, where=""):
    """Duration from the file header alone (soundfile, no decode); `probe_audio` for formats it cannot open."""
    import soundfile as sf

    try:
        info = sf.info(path)
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except Exception:  # not a libsndfile format (or unreadable): the full probe names the problem
        pass
    return probe_audio(path, where).seconds


def load_waveform(path, sample_rate, where=""):
    """`librosa.load(path, sr=sample_rate)` (mono, resampled), with the checks of `probe_audio`."""
    import librosa

    return _checked_read(path, where, lambda p: librosa.load(p, sr=sample_rate))[0]


def encode_audio(audio_tokenizer, path, where=""):
    """Codes (num_codebooks, frames) for one file, as the serve engine computes them. The caller's RNG state is
    left as it was (the tokenizer's forward draws random numbers), so encoding on the fly or preparing in-process
    does not change a run's LoRA init or dropout."""
    import torch

    wav = load_waveform(path, audio_tokenizer.sampling_rate, where)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        return audio_tokenizer.encode(wav, audio_tokenizer.sampling_rate).squeeze(0).cpu()

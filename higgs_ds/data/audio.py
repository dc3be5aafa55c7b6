"""Audio loading and encoding exactly as `HiggsAudioServeEngine._prepare_inputs` does it."""
import os

import librosa
import torch

from .chatml import DataError

SAMPLE_RATE = 24000  # the audio tokenizer's rate: the serve engine loads every clip at it


def load_waveform(path, sample_rate, where=""):
    """`librosa.load(path, sr=sample_rate)` (mono, resampled) with clear errors for missing/corrupt/empty audio."""
    prefix = f"{where}: " if where else ""
    if not os.path.isfile(path):
        raise DataError(f"{prefix}audio file not found: {path}", "missing_audio")
    try:
        wav, _ = librosa.load(path, sr=sample_rate)
    except ImportError:  # a broken install, not a broken file
        raise
    except Exception as e:  # soundfile/audioread raise many types for undecodable files
        raise DataError(f"{prefix}cannot decode audio {path}: {type(e).__name__}: {e}", "corrupt_audio") from None
    if wav.size == 0:
        raise DataError(f"{prefix}audio file is empty: {path}", "empty_audio")
    return wav


@torch.no_grad()
def encode_audio(audio_tokenizer, path, where=""):
    """Codes (num_codebooks, frames) for one file, as the serve engine computes them."""
    wav = load_waveform(path, audio_tokenizer.sampling_rate, where)
    return audio_tokenizer.encode(wav, audio_tokenizer.sampling_rate).squeeze(0).cpu()

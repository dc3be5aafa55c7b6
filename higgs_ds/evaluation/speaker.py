"""Speaker embeddings for SIM (cosine similarity of a generated clip and its reference).

Built in: resemblyzer's `VoiceEncoder` (a 3-layer LSTM d-vector; its weights `pretrained.pt` ship in the wheel).
Optional: a local transformers `WavLMForXVector` dir (`--sim_model`), as in the seed-tts-eval protocol.
All inputs are mono float waveforms at 16 kHz.
"""
import numpy as np
import torch

SAMPLE_RATE = 16000


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class ResemblyzerEmbedder:
    """d-vectors from resemblyzer (VAD-trimmed, volume-normalised, averaged over 1.6 s partial windows)."""

    name = "resemblyzer"

    def __init__(self, device="cpu"):
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device=device, verbose=False)

    def embed(self, wav):
        """d-vector of a 16 kHz clip. A clip where the VAD finds no speech at all (e.g. a failed generation) is
        embedded untrimmed, so it gets a (low) SIM instead of dropping out of the mean."""
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import normalize_volume
        from resemblyzer.hparams import audio_norm_target_dBFS

        raw = np.asarray(wav, dtype=np.float32)
        if not np.any(raw):
            return None  # digital silence: no speaker at all
        trimmed = preprocess_wav(raw)
        if trimmed.size < SAMPLE_RATE // 10:
            trimmed = normalize_volume(raw, audio_norm_target_dBFS, increase_only=True)
        return self.encoder.embed_utterance(trimmed)


def file_embedder(device="cpu"):
    """`embed(path)`: the built-in encoder's d-vector of an audio file (loaded at 16 kHz), or None without speech;
    the pair check of `higgs-ds prepare --check_pairs` uses it."""
    from ..data.audio import load_waveform

    encoder = ResemblyzerEmbedder(device)
    return lambda path: encoder.embed(load_waveform(path, SAMPLE_RATE, path))


class WavLMEmbedder:
    """x-vectors from a `WavLMForXVector` and its feature extractor (`load`: from a local dir)."""

    name = "wavlm"

    def __init__(self, model, extractor, device="cpu"):
        self.device, self.extractor, self.model = device, extractor, model.to(device).eval()

    @classmethod
    def load(cls, path, device="cpu"):
        from transformers import AutoFeatureExtractor, WavLMForXVector

        return cls(WavLMForXVector.from_pretrained(path, local_files_only=True),
                   AutoFeatureExtractor.from_pretrained(path, local_files_only=True), device)

    @torch.no_grad()
    def embed(self, wav):
        feats = self.extractor(np.asarray(wav, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return self.model(**feats.to(self.device)).embeddings[0].float().cpu().numpy()


def similarity(embedder, wav, ref_wav):
    """SIM of two 16 kHz clips, or None when either has no detectable speech."""
    a, b = embedder.embed(wav), embedder.embed(ref_wav)
    return None if a is None or b is None else cosine(a, b)

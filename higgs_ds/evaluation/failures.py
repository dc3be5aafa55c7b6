"""How a generation fails, measured per clip: too long or too short (`duration_ratio`), never stopping
(`stopped`), silence (`silence_ratio`, WebRTC VAD) and looping (`repetition`, on the generated codes).

These are the failures public TTS fine-tunes report while their loss looks fine: a model that talks on until the
token budget runs out, emits silence or noise, or repeats a fragment forever.
"""
import numpy as np

SAMPLE_RATE = 16000
CHARS_PER_SECOND = 14.0  # English read speech (~150 words/min) when neither a target nor a reference rate is known
VAD_FRAME_MS = 30
VAD_MODE = 3  # webrtcvad's most aggressive setting, as resemblyzer trims with
LOOP_FRAMES = 4  # a frame repeats when the LOOP_FRAMES frames ending at it (all codebooks) occurred before
KEYS = ("duration_ratio", "stopped", "silence_ratio", "repetition")


def expected_seconds(text, target_seconds=None, ref_text=None, ref_seconds=None):
    """The duration a clip of `text` should have: the target clip's when there is one, else the text length at the
    reference speaker's rate (characters per second of the reference clip), else at CHARS_PER_SECOND."""
    if target_seconds:
        return float(target_seconds)
    rate = CHARS_PER_SECOND
    if ref_text and ref_seconds and len(ref_text.strip()) > 0:
        rate = len(ref_text.strip()) / ref_seconds
    return max(len(text.strip()), 1) / rate


def silence_ratio(wav16k):
    """Fraction of 30 ms frames of a 16 kHz clip that the VAD finds no speech in (1.0 for digital silence)."""
    import webrtcvad

    pcm = (np.clip(np.asarray(wav16k, dtype=np.float32), -1, 1) * 32767).astype(np.int16)
    n = SAMPLE_RATE * VAD_FRAME_MS // 1000
    frames = [pcm[i:i + n] for i in range(0, len(pcm) - n + 1, n)]
    if not frames:
        return 1.0
    vad = webrtcvad.Vad(VAD_MODE)
    voiced = sum(vad.is_speech(f.tobytes(), SAMPLE_RATE) for f in frames)
    return 1.0 - voiced / len(frames)


def frames_of(codes, codebook_size, delay_pattern=True):
    """(frames, codebooks) int array of a generated clip's codes (codebooks x columns, as the serve engine returns
    them): the delay pattern reverted, stream BOS/EOS columns dropped."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size == 0:
        return np.zeros((0, max(codes.shape[0] if codes.ndim else 0, 1)), dtype=np.int64)
    k = codes.shape[0]
    if delay_pattern:
        t = codes.shape[1] - k + 1
        codes = np.stack([codes[i, i:i + t] for i in range(k)]) if t > 0 else codes[:, :0]
    keep = (codes < codebook_size).all(axis=0)  # BOS / EOS columns are not audio
    return codes[:, keep].T


def repetition(frames, n=LOOP_FRAMES):
    """Fraction of positions whose last `n` frames (every codebook) already occurred earlier in the clip: 0 for
    speech, near 1 for a loop (greedy decoding that loops repeats exactly)."""
    if len(frames) <= n:
        return 0.0
    seen, repeated = set(), 0
    for t in range(len(frames) - n + 1):
        gram = frames[t:t + n].tobytes()
        repeated += gram in seen
        seen.add(gram)
    return repeated / (len(frames) - n + 1)


def stopped(codes, eos_id):
    """Whether the model emitted the audio stream's EOS (the serve engine then ends the clip; with the delay pattern
    the later codebooks drain after it), rather than being cut off by the token budget."""
    return bool((np.asarray(codes) == eos_id).any())


def health(wav16k, seconds, codes, eos_id, codebook_size, expected, delay_pattern=True):
    """The per-clip failure measures of one generation (`KEYS`)."""
    return {"duration_ratio": seconds / expected if expected else None, "stopped": stopped(codes, eos_id),
            "silence_ratio": silence_ratio(wav16k) if len(wav16k) else None,
            "repetition": repetition(frames_of(codes, codebook_size, delay_pattern))}

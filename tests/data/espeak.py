"""Real speech for data tests: espeak-ng voices that the built-in speaker encoder tells apart (same voice >= 0.8,
different voices <= 0.72 on these sentences, measured with resemblyzer)."""
import subprocess

import soundfile as sf

VOICES = ("en-us", "en-us+f4", "en+whisper")
SENTENCES = ("The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore today.",
             "A journey of a thousand miles begins with a single step.",
             "Please call Stella and ask her to bring these things.",
             "We will meet again in the old house near the river.", "Numbers like seven and eleven are often lucky.")


def espeak_speech(out_dir, num_sentences=len(SENTENCES)):
    """{(voice index, sentence index): (float32 waveform, rate)} spoken by espeak-ng (files kept in `out_dir`)."""
    out = {}
    for v, voice in enumerate(VOICES):
        for s, text in enumerate(SENTENCES[:num_sentences]):
            path = out_dir / f"{v}_{s}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
            wav, rate = sf.read(path, dtype="float32")
            out[(v, s)] = (wav, rate)
    return out

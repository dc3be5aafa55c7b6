"""Real speech for the scoring tests, synthesised at run time with the Debian package espeak-ng (installed by
scripts/run_tests.sh). Several voices (variant + pitch), several sentences each."""
import os
import shutil
import subprocess

VOICES = {"us_m3": ["-v", "en-us+m3", "-p", "40"], "gb_f3": ["-v", "en-gb+f3", "-p", "70"],
          "sc_m7": ["-v", "en-gb-scotland+m7", "-p", "25"], "us_f5": ["-v", "en-us+f5", "-p", "90"]}
SENTENCES = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Please call Stella and ask her to bring these things with her from the store.",
             "A large rainbow appeared in the sky after the storm had finally passed.",
             "We will meet again tomorrow morning to finish the remaining work together."]


def require_espeak():
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: run scripts/run_tests.sh (it apt-get installs it)")


def synth(path, text, voice):
    """Write espeak-ng speech (22.05 kHz mono WAV) of `text` in `voice` (a VOICES key) to path."""
    require_espeak()
    subprocess.run(["espeak-ng", *VOICES[voice], "-s", "150", "-w", path, text], check=True)
    return path


def corpus(root, voices=tuple(VOICES), n_sentences=3):
    """{(voice, i): wav path} for the first n_sentences of SENTENCES in each voice."""
    os.makedirs(root, exist_ok=True)
    return {(v, i): synth(os.path.join(root, f"{v}_{i}.wav"), SENTENCES[i], v)
            for v in voices for i in range(n_sentences)}


# one sentence pair per language, for the per-language reports: (tag, espeak-ng voice, sentences)
LANGUAGE_SETS = [("vi", "vi", ["Tôi yêu Việt Nam.", "Hôm nay trời đẹp quá."]),
                 ("zh", "cmn", ["我們今天去北京。", "天氣很好，我很高興。"]),
                 ("ar", "ar", ["ذهب الولد إلى المدرسة.", "الجو جميل اليوم."]),
                 ("en", "en-us", SENTENCES[:2])]


def language_corpus(root):
    """[(language, voice, sentence, wav path)] for LANGUAGE_SETS, synthesised with espeak-ng's own voices."""
    require_espeak()
    os.makedirs(root, exist_ok=True)
    out = []
    for lang, voice, sentences in LANGUAGE_SETS:
        for i, text in enumerate(sentences):
            path = os.path.join(root, f"{lang}_{i}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", path, text], check=True)
            out.append((lang, voice, text, path))
    return out

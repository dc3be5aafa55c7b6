"""VCTK (0.92: `wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac`; 0.80: `wav48/<spk>/<spk>_<nnn>.wav`) with
`txt/<spk>/<spk>_<nnn>.txt`. The speaker is the file name's first field. Only mic1 is read (mic2 records the same
utterance). Utterances that ship without a transcript (all of p315, a few others) are left out with one warning."""
import logging
import os
import re

from .utterances import Utterance, UtteranceSource

log = logging.getLogger(__name__)
WAV_DIRS = ("wav48_silence_trimmed", "wav48")
NAME = re.compile(r"^([a-z]+\d+)_(\d+)(?:_mic(\d))?\.(?:flac|wav)$")


class VCTKSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return os.path.isdir(os.path.join(path, "txt")) and cls._wav_dir(path) is not None

    @staticmethod
    def _wav_dir(path):
        return next((os.path.join(path, d) for d in WAV_DIRS if os.path.isdir(os.path.join(path, d))), None)

    def _audio(self):
        """(path, speaker, utterance id) of every mic1 (or mic-less) recording, sorted."""
        root = self._wav_dir(self.path)
        for spk in sorted(os.listdir(root)):
            if os.path.isdir(os.path.join(root, spk)):
                for name in sorted(os.listdir(os.path.join(root, spk))):
                    m = NAME.match(name)
                    if m and m.group(3) in (None, "1"):
                        yield os.path.join(root, spk, name), m.group(1), f"{m.group(1)}_{m.group(2)}"

    def files(self):
        return [a for a, _, _ in self._audio()]

    def utterances(self):
        untranscribed = []
        for audio, speaker, uid in self._audio():
            txt = os.path.join(self.path, "txt", speaker, uid + ".txt")
            if not os.path.isfile(txt):
                untranscribed.append(uid)
                continue
            with open(txt, encoding="utf-8") as f:
                text = f.read().strip()
            yield Utterance(audio, text, speaker, txt, 1, uid)
        if untranscribed:
            log.warning("%s: %d utterance(s) have no transcript in txt/ and are left out (VCTK ships them so; "
                        "first: %s)", self.path, len(untranscribed), ", ".join(untranscribed[:5]))

"""LibriTTS / LibriTTS-R as unpacked: the root (`SPEAKERS.txt`, ..., `train-clean-100/`, ...), one subset, one
speaker or one chapter dir. Utterances are `<spk>/<chap>/<spk>_<chap>_<para>_<sent>.wav` beside
`<utt>.normalized.txt` (or `.original.txt`); the speaker and chapter come from the file name, whatever level the
path points at."""
import os
import re

from ...errors import DataError
from .utterances import Utterance, UtteranceSource

AUDIO = (".wav", ".flac", ".mp3", ".ogg")
TRANSCRIPTS = (".normalized.txt", ".original.txt", ".txt")
NAME = re.compile(r"^(\d+)_(\d+)_\d+_\d+$")  # <speaker>_<chapter>_<paragraph>_<sentence>


def audio_files(root):
    """Audio files under `root`, walked in sorted order."""
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            if name.endswith(AUDIO):
                yield os.path.join(dirpath, name)


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


class LibriTTSSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        """A dir whose first audio file has a LibriTTS name (only that file is looked for)."""
        first = next(audio_files(path), None) if os.path.isdir(path) else None
        return first is not None and NAME.match(_stem(first)) is not None

    def files(self):
        return list(audio_files(self.path))

    def utterances(self):
        for audio in audio_files(self.path):
            uid, name = _stem(audio), NAME.match(_stem(audio))
            if name is None:
                yield DataError(f"{audio}:1 (sample {uid}): not a LibriTTS file name "
                                "(<speaker>_<chapter>_<paragraph>_<sentence>): its speaker is unknown", "schema",
                                audio, 1, uid)
                continue
            stem = os.path.splitext(audio)[0]
            txt = next((stem + t for t in TRANSCRIPTS if os.path.isfile(stem + t)), None)
            if txt is None:
                yield DataError(f"{audio}:1 (sample {uid}): no transcript "
                                f"({', '.join('<utt>' + t for t in TRANSCRIPTS)})", "schema", audio, 1, uid)
                continue
            with open(txt, encoding="utf-8") as f:
                text = f.read().strip()
            yield Utterance(audio, text, name.group(1), txt, 1, uid)

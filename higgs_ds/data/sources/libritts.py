"""A LibriTTS-style tree: `<root>/<speaker>/<chapter>/<utt>.wav` beside `<utt>.normalized.txt` (or `.txt`,
`.original.txt`); the speaker is the first directory under the root."""
import os

from ..chatml import DataError
from .utterances import Utterance, UtteranceSource

AUDIO = (".wav", ".flac", ".mp3", ".ogg")
TRANSCRIPTS = (".normalized.txt", ".txt", ".original.txt")


class LibriTTSSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return os.path.isdir(path)

    def _audio_files(self):
        for dirpath, dirnames, files in os.walk(self.path):
            dirnames.sort()
            for name in sorted(files):
                if name.endswith(AUDIO):
                    yield os.path.join(dirpath, name)

    def files(self):
        return list(self._audio_files())

    def utterances(self):
        for audio in self._audio_files():
            stem = os.path.splitext(audio)[0]
            rel = os.path.relpath(audio, self.path)
            txt = next((stem + t for t in TRANSCRIPTS if os.path.isfile(stem + t)), None)
            if txt is None:
                yield DataError(f"{audio}:1 (sample {rel}): no transcript ({', '.join('<utt>' + t for t in TRANSCRIPTS)})",
                                "schema", audio, 1, rel)
                continue
            with open(txt, encoding="utf-8") as f:
                text = f.read().strip()
            speaker = rel.split(os.sep)[0] if os.sep in rel else "unknown"
            yield Utterance(audio, text, speaker, txt, 1, os.path.splitext(rel)[0])

"""LJSpeech 1.1: `metadata.csv` (`id|transcription|normalized transcription`, no header, quotes literal) and
`wavs/<id>.wav`. One speaker (`LJ`): every pair is same-speaker by construction."""
import os

from ...errors import DataError
from .utterances import Utterance, UtteranceSource

SPEAKER = "LJ"


class LJSpeechSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return os.path.isfile(os.path.join(path, "metadata.csv")) and os.path.isdir(os.path.join(path, "wavs"))

    def _metadata(self):
        return os.path.join(self.path, "metadata.csv")

    def files(self):
        return [self._metadata()]

    def utterances(self):
        meta = self._metadata()
        with open(meta, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("|")
                if not line.strip():
                    continue
                if len(fields) < 2 or not fields[0]:
                    yield DataError(f"{meta}:{n}: not `id|transcription|normalized transcription`", "schema",
                                    meta, n)
                    continue
                text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
                yield Utterance(os.path.join(self.path, "wavs", fields[0] + ".wav"), text.strip(), SPEAKER, meta,
                                n, fields[0])

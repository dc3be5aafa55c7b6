"""WebDataset tar shards (as Emilia ships): per utterance `<key>.<audio ext>` plus `<key>.json` (`text`,
`speaker`) or `<key>.txt`; members are numbered from 1 in problems (the line of a `tar tf` listing)."""
import json
import os
import tarfile

from ..chatml import DataError
from .utterances import Utterance, UtteranceSource, write_once

AUDIO = (".wav", ".flac", ".mp3", ".ogg")


class WebDatasetSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return path.endswith(".tar")

    def _groups(self):
        """{key: {ext: (member number, bytes)}} in member order."""
        groups = {}
        with tarfile.open(self.path) as tar:
            for n, m in enumerate(tar, start=1):
                if m.isfile():
                    key, ext = m.name.split(".", 1) if "." in os.path.basename(m.name) else (m.name, "")
                    groups.setdefault(key, {})["." + ext] = (n, tar.extractfile(m).read())
        return groups

    def utterances(self):
        out = self.extract_dir()
        for key, parts in self._groups().items():
            audio = next((e for e in AUDIO if e in parts), None)
            n = min(num for num, _ in parts.values())
            if audio is None:
                yield DataError(f"{self.path}:{n} (sample {key}): no audio member ({', '.join(AUDIO)})",
                                "missing_audio", self.path, n, key)
                continue
            meta = {}
            try:
                if ".json" in parts:
                    meta = json.loads(parts[".json"][1].decode("utf-8"))
                elif ".txt" in parts:
                    meta = {"text": parts[".txt"][1].decode("utf-8").strip()}
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield DataError(f"{self.path}:{n} (sample {key}): unreadable metadata: {e}", "json", self.path, n, key)
                continue
            path = write_once(os.path.join(out, key.replace("/", "__") + audio), parts[audio][1])
            yield Utterance(path, str(meta.get("text", "")), str(meta.get("speaker", "unknown")), self.path, n, key)

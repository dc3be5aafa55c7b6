"""WebDataset tar shards (as Emilia ships): per utterance `<key>.<audio ext>` plus `<key>.json` (Emilia's `id, wav,
text, duration, speaker, language, dnsmos`; `speaker` or `speaker_id` names the speaker). Keys follow the
WebDataset spec: the member path up to the first dot of its base name (`./a.b/c.d.json` -> key `./a.b/c`,
extension `d.json`), so `./` prefixes (`tar -C dir -cf x.tar .`), nested dirs and dots in dir names keep every
sample apart. Members are numbered from 1 in problems (the line of a `tar tf` listing)."""
import json
import os
import re
import tarfile

from ...errors import DataError
from .utterances import Utterance, UtteranceSource, write_once

AUDIO = (".wav", ".flac", ".mp3", ".ogg", ".opus")
KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # the webdataset package's base_plus_ext
SPEAKER_FIELDS = ("speaker", "speaker_id")


def split_key(name):
    """(key, ".ext") of a member name, or (name, "") for a base name without a dot."""
    m = KEY.match(name)
    return (m.group(1), "." + m.group(2)) if m else (name, "")


class WebDatasetSource(UtteranceSource):
    @classmethod
    def accepts(cls, path):
        return path.endswith(".tar")

    def _groups(self):
        """{key: {ext: (member number, bytes)}} in member order (regular files only)."""
        groups = {}
        with tarfile.open(self.path) as tar:
            for n, m in enumerate(tar, start=1):
                if m.isfile():
                    key, ext = split_key(m.name)
                    groups.setdefault(key, {})[ext] = (n, tar.extractfile(m).read())
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
            meta, problem = _metadata(parts)
            speaker = next((meta[f] for f in SPEAKER_FIELDS if meta.get(f) is not None), None)
            if problem is None and speaker is None:
                problem = ("schema", f"no {' / '.join(SPEAKER_FIELDS)} in {key}.json: the speakers cannot be "
                                     "told apart")
            if problem is not None:
                yield DataError(f"{self.path}:{n} (sample {key}): {problem[1]}", problem[0], self.path, n, key)
                continue
            name = key[2:] if key.startswith("./") else key
            path = write_once(os.path.join(out, name.replace("/", "__") + audio), parts[audio][1])
            yield Utterance(path, str(meta.get("text", "")), str(speaker), self.path, n, key)


def _metadata(parts):
    """(the `.json` member as a dict, None), or ({}, (kind, message)) when it is missing or unreadable."""
    if ".json" not in parts:
        return {}, ("schema", "no .json member (text, speaker)")
    try:
        meta = json.loads(parts[".json"][1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, ("json", f"unreadable metadata: {e}")
    return (meta, None) if isinstance(meta, dict) else ({}, ("json", "the .json member is not an object"))

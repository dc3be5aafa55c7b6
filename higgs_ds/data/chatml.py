"""Read ChatML voice-cloning data (JSONL, one sample a line, or a JSON list) into `ChatMLSample`s.

Every problem raises `DataError` naming the file, the line (1-based; the list index for JSON lists) and the
sample id. Audio paths are resolved relative to the data file's directory.
"""
import dataclasses
import json
import os

from boson_multimodal.data_types import AudioContent, ChatMLSample, Message, TextContent

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A bad sample or data file; the message names file:line."""


@dataclasses.dataclass
class SourcedSample:
    """A parsed sample and where it came from."""
    sample: ChatMLSample
    file: str
    line: int
    sample_id: str

    @property
    def where(self):
        return f"{self.file}:{self.line} (sample {self.sample_id})"


def _content(raw, where, base_dir):
    if isinstance(raw, str):
        return TextContent(text=raw)
    if isinstance(raw, list):
        return [_content(x, where, base_dir) for x in raw]
    if not isinstance(raw, dict):
        raise DataError(f"{where}: content must be a string, an object or a list, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind == "text":
        if not isinstance(raw.get("text"), str):
            raise DataError(f"{where}: text content needs a string 'text'")
        return TextContent(text=raw["text"])
    if kind == "audio":
        url = raw.get("audio_url")
        if not isinstance(url, str) or not url:
            raise DataError(f"{where}: audio content needs a non-empty 'audio_url'")
        if not os.path.isabs(url):
            url = os.path.normpath(os.path.join(base_dir, url))
        return AudioContent(audio_url=url)
    raise DataError(f"{where}: unknown content type {kind!r} (expected 'text' or 'audio')")


def parse_sample(obj, file, line):
    """Turn one JSON object into a `SourcedSample`, checking roles, content and `start_index`."""
    sample_id = str(obj.get("id", f"line{line}")) if isinstance(obj, dict) else f"line{line}"
    where = f"{file}:{line} (sample {sample_id})"
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise DataError(f"{where}: a sample is an object with a non-empty 'messages' list")
    base_dir = os.path.dirname(os.path.abspath(file))
    messages = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise DataError(f"{where}: message {i} has role {role!r}; expected one of {ROLES}")
        messages.append(Message(role=m["role"], content=_content(m.get("content"), f"{where} message {i}", base_dir)))
    start = obj.get("start_index")
    if start is not None and (not isinstance(start, int) or not 0 <= start < len(messages)):
        raise DataError(f"{where}: start_index {start!r} is out of range for {len(messages)} messages")
    trained_audio = [i for i, m in enumerate(messages) if m.role == "assistant" and i >= (start or 0)
                     and any(isinstance(c, AudioContent) for c in (m.content if isinstance(m.content, list) else [m.content]))]
    if not trained_audio:
        raise DataError(f"{where}: no assistant audio at or after start_index={start} — nothing to learn (audio "
                        "loss 0). A voice-cloning sample has five messages: system, user (reference text), "
                        "assistant (reference audio), user (target text), assistant (target audio), start_index 4.")
    return SourcedSample(ChatMLSample(messages=messages, start_index=start, speaker=obj.get("speaker")),
                         file, line, sample_id)


def read_chatml(path):
    """Yield `SourcedSample`s from a JSONL file or a JSON list file; raises `DataError` at the first bad one."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
    if path.endswith(".json") and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
        for i, obj in enumerate(rows):
            yield parse_sample(obj, path, i + 1)
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: malformed JSON: {e.msg} (column {e.colno})") from None
        yield parse_sample(obj, path, n)

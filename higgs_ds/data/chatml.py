"""Read ChatML voice-cloning data (JSONL, one sample a line, or a JSON list) into `ChatMLSample`s.

Every problem is a `DataError` naming the file, the line (1-based; the list index for JSON lists), the sample id
and a `kind` (see docs/DATA.md). `read_chatml` raises at the first one; `iter_chatml` yields the problem and goes
on. Audio paths are resolved relative to the data file's directory.
"""
import dataclasses
import json
import os
from typing import Optional

from boson_multimodal.data_types import AudioContent, ChatMLSample, Message, TextContent

from ..errors import DataError
from ..languages import check_language

ROLES = ("system", "user", "assistant")
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark Windows tools and spreadsheet exports write


@dataclasses.dataclass
class SourcedSample:
    """A parsed sample, where it came from, and its language tag (None when the sample gives none)."""
    sample: ChatMLSample
    file: str
    line: int
    sample_id: str
    language: str = None
    rejected: Optional[AudioContent] = None  # a preference pair's rejected audio for the target turn

    @property
    def where(self):
        return f"{self.file}:{self.line} (sample {self.sample_id})"


def _content(raw, where, base_dir):
    if isinstance(raw, str):
        return TextContent(text=raw)
    if isinstance(raw, list):
        return [_content(x, where, base_dir) for x in raw]
    if not isinstance(raw, dict):
        raise DataError(f"{where}: content must be a string, an object or a list, got {type(raw).__name__}", "type")
    kind = raw.get("type")
    if kind == "text":
        if not isinstance(raw.get("text"), str):
            raise DataError(f"{where}: text content needs a string 'text'", "type")
        return TextContent(text=raw["text"])
    if kind == "audio":
        url = raw.get("audio_url")
        if not isinstance(url, str) or not url:
            raise DataError(f"{where}: audio content needs a non-empty 'audio_url'", "schema")
        if not os.path.isabs(url):
            url = os.path.normpath(os.path.join(base_dir, url))
        return AudioContent(audio_url=url)
    raise DataError(f"{where}: unknown content type {kind!r} (expected 'text' or 'audio')", "schema")


def is_audio_turn(m):
    return m.role == "assistant" and any(isinstance(c, AudioContent)
                                         for c in (m.content if isinstance(m.content, list) else [m.content]))


def parse_sample(obj, file, line):
    """Turn one JSON object into a `SourcedSample`, checking roles, content, `start_index` and `language`."""
    sample_id = str(obj.get("id", f"line{line}")) if isinstance(obj, dict) else f"line{line}"
    where = f"{file}:{line} (sample {sample_id})"
    try:
        sample = _parse(obj, file, where)
        return SourcedSample(sample, file, line, sample_id, _language(obj, where), _rejected(obj, sample, where, file))
    except DataError as e:
        e.file, e.line, e.sample_id = file, line, sample_id
        raise


def _language(obj, where):
    """The sample's optional `language` (ISO 639-1/3 or BCP-47), in its usual case."""
    if obj.get("language") is None:
        return None
    try:
        return check_language(obj["language"])
    except ValueError as e:
        raise DataError(f"{where}: {e}", "language") from None


def _parse(obj, file, where):
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise DataError(f"{where}: a sample is an object with a non-empty 'messages' list", "schema")
    base_dir = os.path.dirname(os.path.abspath(file))
    messages = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise DataError(f"{where}: message {i} has role {role!r}; expected one of {ROLES}", "role")
        messages.append(Message(role=m["role"], content=_content(m.get("content"), f"{where} message {i}", base_dir)))
    start = obj.get("start_index")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
        raise DataError(f"{where}: start_index must be an integer, got {type(start).__name__} {start!r}", "type")
    if start is not None and not 0 <= start < len(messages):
        raise DataError(f"{where}: start_index {start!r} is out of range for {len(messages)} messages", "start_index")
    speaker = obj.get("speaker")
    if speaker is not None and not isinstance(speaker, str):
        raise DataError(f"{where}: speaker must be a string, got {type(speaker).__name__}", "type")
    if not any(is_audio_turn(m) for m in messages[start or 0:]):
        raise DataError(
            f"{where}: no assistant audio at or after start_index={start} — nothing to learn (audio loss 0). Fix: "
            "append the target audio as an assistant message and point start_index at it; a voice-cloning sample "
            "has five messages: system, user (reference text), assistant (reference audio), user (target text), "
            "assistant (target audio), with start_index 4.", "no_target_audio")
    if start is not None and not is_audio_turn(messages[start]):
        raise DataError(f"{where}: start_index {start} points at a {messages[start].role} turn without audio; it "
                        "must point at the assistant turn holding the target audio (4 in the five-message form)",
                        "start_index")
    if messages[-1].role == "user":
        raise DataError(f"{where}: the last message is a user turn that is never answered (its text has no "
                        "assistant audio after it); end the sample with the assistant turn holding its audio, or drop "
                        "the trailing user turn", "unanswered_turn")
    return ChatMLSample(messages=messages, start_index=start, speaker=speaker)


def _rejected(obj, sample, where, file):
    """The `rejected` audio of a preference pair (None when absent): an audio content for the target turn, which must
    be the last message and hold exactly one audio (the chosen one)."""
    raw = obj.get("rejected")
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "audio":
        raise DataError(f"{where}: 'rejected' must be an audio content {{\"type\": \"audio\", \"audio_url\": ...}}",
                        "rejected")
    target = sample.messages[-1]
    contents = target.content if isinstance(target.content, list) else [target.content]
    if sample.start_index != len(sample.messages) - 1 or sum(isinstance(c, AudioContent) for c in contents) != 1:
        raise DataError(f"{where}: a preference pair's start_index must point at its last message, an assistant turn "
                        "holding one audio (the chosen audio; 'rejected' replaces it)", "rejected")
    return _content(raw, f"{where} rejected", os.path.dirname(os.path.abspath(file)))


def _lines(path):
    """(line number, decoded text) per non-blank line, or (line number, DataError) for a line that is not UTF-8."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a leading byte-order mark is not data
            except UnicodeDecodeError as e:
                yield n, DataError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start})", "encoding", path, n)
                continue
            if text.strip():
                yield n, text


def iter_chatml(path):
    """Yield a `SourcedSample` or a `DataError` per sample of a JSONL / JSON list file, never stopping early."""
    if not os.path.isfile(path):
        yield DataError(f"{path}: data file not found", "file", path, 0)
        return
    if path.endswith(".json"):
        with open(path, "rb") as f:
            head = f.read(4096).removeprefix(BOM).lstrip()
        if head.startswith(b"["):
            yield from _iter_json_list(path)
            return
    for n, text in _lines(path):
        if isinstance(text, DataError):
            yield text
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield DataError(f"{path}:{n}: malformed JSON: {e.msg} (column {e.colno})", "json", path, n)
            continue
        try:
            yield parse_sample(obj, path, n)
        except DataError as e:
            yield e


def _iter_json_list(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        rows = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})", "encoding", path, line)
        return
    except json.JSONDecodeError as e:
        yield DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg}", "json", path, e.lineno)
        return
    for i, obj in enumerate(rows):
        try:
            yield parse_sample(obj, path, i + 1)
        except DataError as e:
            yield e


def read_chatml(path):
    """Yield `SourcedSample`s from a JSONL file or a JSON list file; raises `DataError` at the first bad one."""
    for item in iter_chatml(path):
        if isinstance(item, DataError):
            raise item
        yield item

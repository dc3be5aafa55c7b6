"""Request files: JSONL, one JSON object a line. `higgs-ds score` reads `{"audio": WAV, "ref_audio": WAV, "text": STR}`
(optional `speaker`, `language`); `higgs-ds generate --requests` reads `{"ref_audio", "ref_text", "text"}` (optional
`output`); `higgs-ds sample` writes score requests with more fields (`candidates.jsonl`). Audio paths are resolved
against the file's directory (as in ChatML data files); every other field is carried through unchanged."""
import json
import os

from ..errors import DataError
from ..languages import check_language

SCORE_FIELDS = ("audio", "ref_audio", "text")
GENERATE_FIELDS = ("ref_audio", "ref_text", "text")


def read_requests(path, fields=SCORE_FIELDS, audio_fields=("audio", "ref_audio")):
    """List of request dicts (every field of the line, `audio_fields` resolved, `line` added); a DataError naming
    file:line for the first bad line (bad JSON, missing field, audio file not found, bad language tag)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: request file not found", "missing_file", file=path)
    base, out = os.path.dirname(os.path.abspath(path)), []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                out.append(_request(line, f"{path}:{n}", base, fields, audio_fields) | {"line": n})
    if not out:
        raise DataError(f"{path}: no requests", "empty", path)
    return out


def _request(line, where, base, fields, audio_fields):
    file, n = where.rsplit(":", 1)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})", "json", file, int(n)) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with {', '.join(fields)}", "schema", file, int(n))
    missing = [k for k in fields if not isinstance(obj.get(k), str)]
    if missing:
        raise DataError(f"{where}: missing or non-string field(s): {', '.join(missing)}", "schema", file, int(n))
    req = dict(obj)
    for k in audio_fields:
        req[k] = req[k] if os.path.isabs(req[k]) else os.path.join(base, req[k])
        if not os.path.isfile(req[k]):  # before any model loads
            raise DataError(f"{where}: {k} file not found: {req[k]}", "missing_audio", file, int(n))
    if obj.get("language") is not None:
        try:
            req["language"] = check_language(obj["language"])
        except ValueError as e:
            raise DataError(f"{where}: {e}", "language", file, int(n)) from None
    return req

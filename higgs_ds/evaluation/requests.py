"""The request file of `higgs-ds score`: JSONL, one `{"audio": WAV, "ref_audio": WAV, "text": STR}` per line, with
optional `speaker` and `language` (a language tag, languages.py). Relative paths are resolved against the file's
directory (as in ChatML data files)."""
import json
import os

from ..errors import DataError
from ..languages import check_language

FIELDS = ("audio", "ref_audio", "text")


def read_requests(path):
    """List of {"audio", "ref_audio", "text", "line"}; a DataError naming file:line for the first bad line (bad JSON,
    missing field, audio file not found)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: request file not found", "missing_file", file=path)
    base, out = os.path.dirname(os.path.abspath(path)), []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})", "json", path, n) from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected an object with {', '.join(FIELDS)}", "schema", path, n)
            missing = [k for k in FIELDS if not isinstance(obj.get(k), str)]
            if missing:
                raise DataError(f"{where}: missing or non-string field(s): {', '.join(missing)}", "schema", path, n)
            req = {k: obj[k] for k in FIELDS}
            for k in ("audio", "ref_audio"):
                req[k] = req[k] if os.path.isabs(req[k]) else os.path.join(base, req[k])
                if not os.path.isfile(req[k]):  # before any model loads
                    raise DataError(f"{where}: {k} file not found: {req[k]}", "missing_audio", path, n)
            if obj.get("language") is not None:
                try:
                    req["language"] = check_language(obj["language"])
                except ValueError as e:
                    raise DataError(f"{where}: {e}", "language", path, n) from None
            out.append({**req, "line": n, **({"speaker": obj["speaker"]} if "speaker" in obj else {})})
    if not out:
        raise DataError(f"{path}: no requests", "empty", path)
    return out

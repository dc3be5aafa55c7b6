"""Seed-TTS-eval test lists (`seedtts_testset/{en,zh}/meta.lst`, `hardcase.lst`): one line per utterance,
`utt|prompt_text|prompt_wav|text`, or with a fifth field, the ground-truth wav of `text`; paths relative to the
list. Read into the evaluation's cloning prompts (`prompts.EvalPrompt`)."""
import os

from ..errors import DataError


def read_meta(path):
    """[EvalPrompt] of a meta.lst, in file order; a `DataError` naming file:line for the first bad line (field count,
    empty field, duplicate utt, wav not found), before any model loads."""
    from ..data.audio import header_seconds
    from ..inference.generate import cloning_prompt
    from .prompts import EvalPrompt

    if not os.path.isfile(path):
        raise DataError(f"{path}: meta list not found", "missing_file", file=path)
    base, out, seen = os.path.dirname(os.path.abspath(path)), [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = [x.strip() for x in line.rstrip("\n").split("|")]
            where = f"{path}:{n}"
            if len(fields) not in (4, 5) or not all(fields):
                raise DataError(f"{where}: expected utt|prompt_text|prompt_wav|text[|ground_truth_wav] (4 or 5 "
                                f"non-empty fields separated by |), got {len(fields)} field(s)", "schema", path, n)
            utt, ref_text, ref_wav, text = fields[:4]
            if utt in seen:
                raise DataError(f"{where}: utt {utt!r} appears twice", "duplicate", path, n)
            seen.add(utt)
            wavs = [w if os.path.isabs(w) else os.path.join(base, w) for w in fields[2:3] + fields[4:]]
            for w in wavs:
                if not os.path.isfile(w):
                    raise DataError(f"{where}: wav file not found: {w}", "missing_audio", path, n)
            target = header_seconds(wavs[1], where) if len(wavs) > 1 else None
            speaker = os.path.splitext(os.path.basename(wavs[0]))[0]  # the voice: its reference clip
            out.append(EvalPrompt(cloning_prompt(wavs[0], ref_text, text), wavs[0], text, speaker, utt,
                                  ref_text=ref_text, target_seconds=target))
    if not out:
        raise DataError(f"{path}: no lines", "empty", path)
    return out

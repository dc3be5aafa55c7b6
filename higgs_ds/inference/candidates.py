"""The files of a sampling run (`higgs-ds sample --output DIR`): the prompts it reads, one row file and one wav per
candidate, the settings it was started with (`sampling.json`), failed ranks' markers (`failed/rank<r>`), and the
merged `DIR/candidates.jsonl`.

A prompt is a voice-cloning ChatML sample as training reads it (checked by data/validate.py, problems named
file:line): before its `start_index`, one user text (the reference transcript), one assistant audio (the reference
clip) and one user text (what to say); its target clip, when it has one, is kept for scoring (duration). The
four-message form without a target (ending with the text to say) is a prompt too.
"""
import dataclasses
import json
import os

from ..durable import write_atomic
from ..errors import ConfigError, DataError

CANDIDATES = "candidates.jsonl"
SETTINGS = "sampling.json"


@dataclasses.dataclass
class CandidatePrompt:
    index: int  # position in the prompt file (0-based): the prompt's identity in seeds and file names
    where: str  # file:line of the source sample
    ref_audio: str
    ref_text: str
    text: str
    speaker: str = None
    language: str = None
    target_audio: str = None
    target_duration_s: float = None

    def request(self):
        """The fields every candidate row of this prompt carries (the request format of `higgs-ds score`)."""
        row = {"ref_audio": self.ref_audio, "text": self.text, "prompt": self.where, "prompt_index": self.index,
               "ref_text": self.ref_text}
        row.update({k: v for k, v in (("speaker", self.speaker), ("language", self.language)) if v is not None})
        if self.target_audio:
            row.update(target_audio=self.target_audio, target_duration_s=self.target_duration_s)
        return row


def _contents(message):
    return message.content if isinstance(message.content, list) else [message.content]


def candidate_prompt(src, index, has_target=True):
    """The `CandidatePrompt` of a `SourcedSample`; a DataError naming file:line when it is not a cloning prompt."""
    from boson_multimodal.data_types import AudioContent, TextContent

    from ..data.audio import header_seconds

    start = src.sample.start_index or len(src.sample.messages) - 1
    before, after = src.sample.messages[:start], src.sample.messages[start:] if has_target else []
    audio = [c.audio_url for m in before for c in _contents(m) if isinstance(c, AudioContent)]
    texts = [c.text for m in before if m.role == "user" for c in _contents(m) if isinstance(c, TextContent)]
    if len(audio) != 1 or len(texts) != 2:
        raise DataError(f"{src.where}: not a voice-cloning prompt: before start_index it needs one reference clip and "
                        f"two user texts (reference transcript, text to say); found {len(audio)} clip(s), "
                        f"{len(texts)} text(s)", "prompt", src.file, src.line, src.sample_id)
    target = [c.audio_url for m in after if m.role == "assistant" for c in _contents(m) if isinstance(c, AudioContent)]
    seconds = header_seconds(target[-1], src.where) if target else None
    return CandidatePrompt(index, f"{src.file}:{src.line}", audio[0], texts[0], texts[1], src.sample.speaker,
                           src.language, target[-1] if target else None, seconds)


def read_prompts(path):
    """Every prompt of a ChatML file after the data checks of training (every problem listed, file:line, one
    DataError). A prompt may also end with the text to say (four messages, no target clip)."""
    from ..data.validate import Problem, ValidationReport, Validator, finish_report

    validator, report, prompts = Validator(), ValidationReport(), []
    for item in _items(path):
        report.num_read += 1
        try:
            if isinstance(item, DataError):
                raise item
            src, has_target = item
            validator.check(src, report)
            prompts.append(candidate_prompt(src, len(prompts), has_target))
        except DataError as e:
            if not isinstance(item, DataError):
                e.file, e.line, e.sample_id = src.file, src.line, src.sample_id
            report.problems.append(Problem.from_error(e))
    if report.num_read == 0:
        raise DataError(f"{path}: no prompts (empty file)", "empty_data", path)
    finish_report(report, "fail")
    return prompts


def _items(path):
    """(SourcedSample, has a target) or a DataError per sample of `path`."""
    from ..data.chatml import iter_chatml

    for item in iter_chatml(path):
        if isinstance(item, DataError):
            yield _as_prompt(path, item) if item.kind == "unanswered_turn" else item
        else:
            yield item, True


def _as_prompt(path, error):
    """(SourcedSample, False) of a sample that ends with its unanswered user text (the prompt form), read as if its
    reference clip answered it (a stand-in target, ignored); `error` when it is not that."""
    from ..data.chatml import parse_sample

    obj = _raw_sample(path, error.line)
    clips = [m["content"] for m in obj["messages"] if isinstance(m, dict) and isinstance(m.get("content"), dict)
             and m["content"].get("type") == "audio"]
    if not clips:
        return error
    obj = {**obj, "messages": obj["messages"] + [{"role": "assistant", "content": clips[-1]}],
           "start_index": len(obj["messages"])}
    try:
        return parse_sample(obj, path, error.line), False
    except DataError:
        return error


def _raw_sample(path, line):
    """The JSON object of sample `line` (a JSONL line, or item line - 1 of a JSON list file)."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return json.loads(text)[line - 1]
    return json.loads(text.splitlines()[line - 1])


def row_path(output_dir, index, k):
    return os.path.join(output_dir, "rows", f"{index:06d}_{k:03d}.json")


def wav_name(index, k):
    """The candidate's wav, relative to the output dir (as candidates.jsonl names it)."""
    return os.path.join("wavs", f"{index:06d}_{k:03d}.wav")


def check_settings(output_dir, settings):
    """Write `DIR/sampling.json` on the first run; a rerun with other settings is refused (its candidates would not
    be the ones the seeds promise)."""
    path = os.path.join(output_dir, SETTINGS)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise ConfigError(f"{output_dir} holds candidates sampled with other settings ({', '.join(changed)}: "
                              f"{[old.get(k) for k in changed]} there, {[settings.get(k) for k in changed]} now); "
                              "use a new --output")
        return
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(path, json.dumps(settings, indent=1), f".tmp{os.getpid()}")  # every rank may write it


def pending(output_dir, prompts, num_samples, rank=0, world=1):
    """(this rank's (prompt, k) pairs, those without a row yet): rank r takes the prompts whose index is r mod world."""
    mine = [(p, k) for p in prompts if p.index % world == rank for k in range(num_samples)]
    return mine, [(p, k) for p, k in mine if not os.path.isfile(row_path(output_dir, p.index, k))]


def failed_ranks(output_dir, since):
    """The ranks whose sampling failed after `since` (a time.time()), from their `DIR/failed/rank<r>` markers."""
    root = os.path.join(output_dir, "failed")
    names = os.listdir(root) if os.path.isdir(root) else []
    # file times come from a coarser clock than time.time(): a second of slack
    return sorted(int(n[4:]) for n in names if os.path.getmtime(os.path.join(root, n)) >= since - 1.0)


def mark_failed(output_dir, rank, error):
    os.makedirs(os.path.join(output_dir, "failed"), exist_ok=True)
    write_atomic(os.path.join(output_dir, "failed", f"rank{rank}"), f"{type(error).__name__}: {error}\n")


def read_rows(output_dir, prompts, num_samples):
    """Every candidate's row (prompt order, then k), those without audio included; None while some row is
    missing (another rank still at work)."""
    rows = []
    for p in prompts:
        for k in range(num_samples):
            if not os.path.isfile(path := row_path(output_dir, p.index, k)):
                return None
            with open(path) as f:
                rows.append(json.load(f))
    return rows


def merge_candidates(output_dir, prompts, num_samples):
    """Write `DIR/candidates.jsonl` (prompt order, then k: the rows with audio) once every candidate's row exists;
    returns {"candidates", "no_audio"} counts, or None while some row is missing (another rank still at work)."""
    rows = read_rows(output_dir, prompts, num_samples)
    if rows is None:
        return None
    good = [r for r in rows if r.get("audio")]
    write_atomic(os.path.join(output_dir, CANDIDATES), "".join(json.dumps(r) + "\n" for r in good))
    return {"candidates": len(good), "no_audio": len(rows) - len(good)}

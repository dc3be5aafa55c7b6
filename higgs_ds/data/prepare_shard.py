"""One shard of `higgs-ds prepare`: validate, tokenize and encode a slice of the samples, write its Arrow file.

Runs in the preparing process or in a worker process (prepare.py); the tokenizers are loaded once per process.
Writes `shards/shard-NNNNN.arrow`, then `shards/shard-NNNNN.json` (its validation results): a shard whose .json
exists is complete, so a kill at any point loses at most the shards in progress.
"""
import dataclasses
import os

import numpy as np

from ..errors import DataError
from .prepared import make_row, shard_name, write_json, write_shard_rows
from .validate import Problem, ValidationReport, Validator

_STATE = {}
MAX_CACHED = 50_000  # clips whose probe / codes a prepare process keeps (a few KB each)


def init_worker(tokenizer_path, audio_tokenizer_path, limits, threads=None, device=None):
    """Load the text and audio tokenizers once in this process (the `ProcessPoolExecutor` initializer)."""
    import torch

    from ..models.audio_tokenizer import load_audio_tokenizer
    from ..models.loading import load_text_tokenizer

    if threads:
        torch.set_num_threads(threads)
    _STATE.update(tokenizer=load_text_tokenizer(tokenizer_path), limits=limits,
                  audio_tokenizer=load_audio_tokenizer(audio_tokenizer_path, device=device or "cpu"))


def release():
    """Drop what `init_worker` loaded (the audio tokenizer may sit on a GPU) and the per-process caches."""
    import torch

    _STATE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sample_json(src):
    """The ChatML JSON of a parsed sample (audio paths absolute), as `chatml.parse_sample` reads it back."""
    from boson_multimodal.data_types import AudioContent

    def content(c):
        if isinstance(c, list):
            return [content(x) for x in c]
        if isinstance(c, AudioContent):
            return {"type": "audio", "audio_url": os.path.abspath(c.audio_url)}
        return {"type": "text", "text": c.text}

    s = src.sample
    out = {"id": src.sample_id, "speaker": s.speaker, "start_index": s.start_index, "language": src.language,
           "messages": [{"role": m.role, "content": content(m.content)} for m in s.messages]}
    if src.rejected is not None:
        out["rejected"] = content(src.rejected)
    return out


def _urls_in_order(items):
    """Audio paths of the parsed samples, in order of first use (the order validation meets them)."""
    from boson_multimodal.data_types import AudioContent

    urls = {}
    for it in items:
        if not isinstance(it, DataError):
            for m in it.sample.messages:
                for c in m.content if isinstance(m.content, list) else [m.content]:
                    if isinstance(c, AudioContent):
                        urls.setdefault(c.audio_url)
            if it.rejected is not None:  # a preference pair's rejected clip, probed by validation too
                urls.setdefault(it.rejected.audio_url)
    return list(urls)


def _codes(url, where, codes_by_url, encoded):
    """The codes of one audio file, encoded once per process (a reference or rejected clip is often shared)."""
    from .audio import encode_audio

    if url not in codes_by_url:
        codes = encode_audio(_STATE["audio_tokenizer"], url, where).numpy()
        codes_by_url[url] = codes.astype(np.int16)
        encoded.add(url)
    return codes_by_url[url]


def _row(src, codes_by_url, encoded):
    from .tokens import audio_in_urls, tokenize_sample

    tokenizer = _STATE["tokenizer"]
    input_tokens, label_tokens, audio_contents = tokenize_sample(src, tokenizer)
    audio_in = audio_in_urls(src, input_tokens, audio_contents, tokenizer, _STATE["limits"].whisper_audio)
    clips = [_codes(c.audio_url, src.where, codes_by_url, encoded) for c in audio_contents]
    rejected = _codes(src.rejected.audio_url, src.where, codes_by_url, encoded) if src.rejected else None
    return make_row(src, input_tokens, label_tokens, clips, sample_json(src), audio_in, rejected)


def process_shard(root, k, items, rank=0):
    """Prepare shard `k` from `items` (`SourcedSample`s and `DataError`s); returns its summary (a dict)."""
    from ..faults import fault

    validator, report = Validator(_STATE["tokenizer"], _STATE["limits"]), ValidationReport()
    # probes and codes are kept across this process's shards (a reference clip is often shared), up to a bound
    validator._audio = _STATE.setdefault("probes", {})
    codes_by_url = _STATE.setdefault("codes", {})
    for cache in (validator._audio, codes_by_url):
        if len(cache) > MAX_CACHED:
            cache.clear()
    rows, encoded = [], set()
    for item in items:
        report.num_read += 1
        if not isinstance(item, DataError):
            try:
                validator.check(item, report)
                rows.append(_row(item, codes_by_url, encoded))
                continue
            except DataError as e:
                e.file, e.line, e.sample_id = item.file, item.line, item.sample_id
                item = e
        report.problems.append(Problem.from_error(item))
    suffix = f".tmp{os.getpid()}"
    written = write_shard_rows(os.path.join(root, shard_name(k) + ".arrow"), rows, suffix)  # bytes, crc32
    fault("kill_mid_prepare", k, rank)  # the .arrow is written, its .json is not: the shard is redone on rerun
    audio = {u: dataclasses.astuple(validator._audio[u]) for u in _urls_in_order(items) if u in report.audio_files}
    meta = {"shard": k, "rank": rank, "rows": len(rows), "num_read": report.num_read,
            "problems": [dataclasses.asdict(p) for p in report.problems], "audio": audio,
            "speakers": sorted(report.speakers), "languages": dict(report.languages),
            "token_lengths": report.token_lengths,
            "num_codebooks": next((int(c.shape[0]) for c in codes_by_url.values()), None),
            "encoded_seconds": sum(audio[u][0] for u in encoded if u in audio), **written}
    write_json(os.path.join(root, shard_name(k) + ".json"), meta)
    return meta

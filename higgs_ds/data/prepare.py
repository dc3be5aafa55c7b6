"""`higgs-ds prepare --data SOURCE... --output DIR`: validate, tokenize and encode once, in shards, in parallel.

The samples of all sources (in order) are cut into shards of `shard_size`. Shard k belongs to rank
`k % world_size` (RANK / WORLD_SIZE under `torchrun` or `deepspeed`; one rank otherwise), and within a rank to
one of `num_workers` processes. A shard is done when its .json exists (prepare_shard.py): a rerun skips done
shards. Rank 0 then waits for every shard, merges the validation results (exactly what `validate_data` reports
for the same files) and writes index.json atomically; with `on_bad_sample="fail"` and bad samples it raises
instead (the shards stay, so a rerun with "skip" reuses them).
"""
import dataclasses
import hashlib
import json
import logging
import math
import os
import time

from ..errors import DataError
from .audio import AudioInfo
from .prepare_checks import PAIR_CHECK, pair_summary, verify_pairs, write_quality_columns
from .prepared import FAILED, FORMAT_VERSION, INDEX, SHARDS, SPEC, shard_name, write_json
from .prepared_check import shard_intact
from .sources import open_sources, sources_id
from .validate import Problem, ValidationConfig, ValidationReport, finish_report

log = logging.getLogger(__name__)
MIB = 1 << 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def text_tokenizer_id(path):
    """Identity of a text tokenizer dir: hash of its tokenizer files."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = os.path.join(path, name)
        if os.path.isfile(p):
            h.update(name.encode() + open(p, "rb").read())
    return h.hexdigest()[:16]


def audio_tokenizer_id(tokenizer_dir):
    """Identity of an audio tokenizer dir: hash of config.json and of model.pth's size, first and last MiB."""
    h = hashlib.sha256(open(os.path.join(tokenizer_dir, "config.json"), "rb").read())
    weights = os.path.join(tokenizer_dir, "model.pth")
    size = os.path.getsize(weights)
    with open(weights, "rb") as f:
        h.update(str(size).encode() + f.read(MIB))
        f.seek(max(0, size - MIB))
        h.update(f.read(MIB))
    return h.hexdigest()[:16]


def limit_values(limits):
    """What a prepared dataset's validation depends on (not --on_bad_sample: a rerun with skip reuses shards): the
    limits, the pair requirement (--stage dpo) and the Whisper tower's audio-in checks."""
    return {k: v for k, v in dataclasses.asdict(limits).items() if k != "on_bad_sample"}


def make_spec(sources, tokenizer_path, audio_tokenizer_path, limits, shard_size, num_items, pair_check=None):
    spec = {"format_version": FORMAT_VERSION, "sources": [s.identity() for s in sources],
            "text_tokenizer_id": text_tokenizer_id(tokenizer_path),
            "audio_tokenizer_id": audio_tokenizer_id(audio_tokenizer_path), "limits": limit_values(limits),
            "shard_size": shard_size, "num_items": num_items}
    if pair_check is not None and pair_check.enabled():  # absent otherwise: earlier specs keep their ids
        spec["pair_check"] = dataclasses.asdict(pair_check)
    spec["spec_id"] = sources_id(sources, {k: v for k, v in spec.items() if k != "sources"})
    return spec


def cache_dir_for(path, tokenizer_path, audio_tokenizer_path, limits, shard_size=256, source_config=None):
    """Where training's prepare cache keeps source `path` prepared with these tokenizers and limits:
    `$HIGGS_DS_CACHE/prepared/<spec id>/` (auto_prepare.py)."""
    from ..constants import cache_root

    sources = open_sources([path], source_config)
    spec = make_spec(sources, tokenizer_path, audio_tokenizer_path, limits, shard_size, None)
    return os.path.join(cache_root(), "prepared", spec["spec_id"])


def _claim(root, spec):
    """Create the output dir with spec.json, or check that an existing one prepares the same thing."""
    os.makedirs(os.path.join(root, SHARDS), exist_ok=True)
    path = os.path.join(root, SPEC)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("spec_id") != spec["spec_id"]:
            raise DataError(f"{root}: holds a prepared dataset of other sources, tokenizers or limits (see "
                            f"{path}): use another --output or delete it", "file", root, 0)
        return
    write_json(path, spec)


def _done(root, k):
    return os.path.isfile(os.path.join(root, shard_name(k) + ".json"))


def _run_shards(root, jobs, worker_args, num_workers, rank, show_progress):
    """Run `jobs` ({k: items}) in this process (num_workers <= 1) or in a pool; tqdm: samples, ETA, audio h/s."""
    from tqdm import tqdm

    from . import prepare_shard

    bar = tqdm(total=sum(len(v) for v in jobs.values()), unit="sample", desc=f"preparing (rank {rank})",
               disable=not show_progress)
    t0, hours = time.time(), 0.0

    def done(meta):
        nonlocal hours
        hours += meta["encoded_seconds"] / 3600
        bar.update(meta["num_read"])
        bar.set_postfix(audio_h_per_s=f"{hours / max(time.time() - t0, 1e-9):.4f}")

    if num_workers <= 1:
        prepare_shard.init_worker(*worker_args)
        try:
            for k, items in jobs.items():
                done(prepare_shard.process_shard(root, k, items, rank))
        finally:  # a training run's process goes on to train: the tokenizers leave its memory (and GPU)
            prepare_shard.release()
    else:
        import concurrent.futures as cf
        import multiprocessing

        with cf.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=prepare_shard.init_worker, initargs=worker_args) as pool:
            futures = [pool.submit(prepare_shard.process_shard, root, k, items, rank) for k, items in jobs.items()]
            for f in cf.as_completed(futures):
                done(f.result())
    bar.close()
    return hours


def merge_report(root, num_shards, items):
    """The `ValidationReport` of all shards, as `validate_data` would build it over the same sources."""
    report, metas = ValidationReport(), []
    for k in range(num_shards):
        with open(os.path.join(root, shard_name(k) + ".json")) as f:
            metas.append(json.load(f))
    audio = {}
    for m in metas:
        report.num_read += m["num_read"]
        report.problems += [Problem(**p) for p in m["problems"]]
        report.speakers.update(m["speakers"])
        report.languages.update(m.get("languages", {}))
        report.token_lengths += m["token_lengths"]
        audio.update({u: AudioInfo(*v) for u, v in m["audio"].items()})
    for url, info in audio.items():
        report.add_audio(url, info)
    bad = {(p.file, p.line, p.sample_id) for p in report.problems}  # a target's K pairs share file:line, not ids
    report.samples = [it for it in items
                      if not isinstance(it, DataError) and (it.file, it.line, it.sample_id) not in bad]
    return report, metas


def wait_for_shards(root, num_shards, poll_s=2.0):
    """Rank 0: wait until every rank has finished its shards (their .json files exist); a rank that failed left
    FAILED with its error."""
    last = 0.0
    while missing := [k for k in range(num_shards) if not _done(root, k)]:
        if os.path.isfile(os.path.join(root, FAILED)):
            with open(os.path.join(root, FAILED)) as f:
                raise DataError(f"{root}: another rank failed to prepare its shards:\n{f.read()}", "prepare_failed")
        if time.time() - last > 60:
            log.info("waiting for %d shard(s) of other ranks (first: %s)", len(missing), shard_name(missing[0]))
            last = time.time()
        time.sleep(poll_s)


def write_index(root, spec, report, metas):
    num_codebooks = next((m["num_codebooks"] for m in metas if m["num_codebooks"]), None)
    index = {"format_version": FORMAT_VERSION, "spec_id": spec["spec_id"], "spec": spec,
             "shards": [{"name": shard_name(m["shard"]), "rows": m["rows"],
                         **{k: m[k] for k in ("bytes", "crc32") if k in m}} for m in metas],
             "num_samples": sum(m["rows"] for m in metas), "num_codebooks": num_codebooks,
             "report": report.to_dict(), "problems": [dataclasses.asdict(p) for p in report.problems]}
    write_json(os.path.join(root, INDEX), index)
    return index


def dist_env():
    """(rank, world_size, local_rank) from the launcher's environment (torchrun, deepspeed); (0, 1, 0) otherwise."""
    return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def prepare_dataset(data, output, tokenizer_path, audio_tokenizer_path, limits=None, on_bad_sample="fail",
                    num_workers=1, shard_size=256, show_progress=True, source_config=None, share=None,
                    pair_check=None, quality=None, scorers=None):
    """Prepare `data` (paths of sources, read with `source_config`: a `SourceConfig`) into `output`; returns a stats
    dict (rank 0: with the index). `share=(rank, world)`: this process's share of the shards when it is not the
    launcher's RANK / WORLD_SIZE (a training run's ranks, auto_prepare.py); the process keeps its torch threads.
    `pair_check`: a `PairCheckConfig`, `quality`: a `QualityConfig`; `scorers`: their `Scorers`
    (prepare_checks.py)."""
    import torch

    limits, (rank, world, local_rank) = limits or ValidationConfig(), dist_env()
    if share is not None:
        rank, world = share
    t0 = time.time()
    sources = open_sources(data, source_config)
    items = [it for s in sources for it in s.items()]
    if not items:
        raise DataError(f"{', '.join(data)}: no samples (empty data file)", "empty_data")
    items, pairs, write_pairs = verify_pairs(items, sources, output, pair_check, scorers, rank, world)
    spec = make_spec(sources, tokenizer_path, audio_tokenizer_path, limits, shard_size, len(items), pair_check)
    _claim(output, spec)
    if write_pairs:
        write_json(os.path.join(output, PAIR_CHECK), pairs)
    if rank == 0 and quality is not None and quality.enabled():
        write_quality_columns(output, items, pairs, quality, scorers)
    num_shards = max(1, math.ceil(len(items) / shard_size))
    stats = {"output": output, "rank": rank, "world_size": world, "samples": len(items), "shards": num_shards}
    if pairs is not None:
        stats["pair_check"] = pair_summary(pairs)
    todo = {k: items[k * shard_size:(k + 1) * shard_size] for k in range(rank, num_shards, world)
            if not shard_intact(output, shard_name(k))}  # unfinished, or its .arrow damaged since
    stats["shards_skipped"] = len(range(rank, num_shards, world)) - len(todo)
    if todo:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        # a training run's process keeps the threads its rank was given (engine/distributed.share_host_threads)
        threads = max(1, (os.cpu_count() or 1) // max(1, num_workers)) if device == "cpu" and share is None else None
        stats["audio_hours_encoded"] = _run_shards(
            output, todo, (tokenizer_path, audio_tokenizer_path, limits, threads, device), num_workers, rank,
            show_progress)
    if rank != 0:
        return stats
    wait_for_shards(output, num_shards)
    report, metas = merge_report(output, num_shards, items)
    log.info("%s\n%s", output, report.summary())
    finish_report(report, on_bad_sample)  # raises with on_bad_sample="fail" and bad samples: no index
    index = write_index(output, spec, report, metas)
    stats.update(num_samples=index["num_samples"], audio_hours=index["report"]["audio_hours"],
                 seconds=round(time.time() - t0, 3))
    return stats


def prepare_from_args(args, tiny_assets, scorers=None):
    """`higgs-ds prepare --data SOURCE... [--output DIR]`: all sources into DIR, or each into the cache dir training
    would use for it (auto_prepare.py); prints each prepare's stats (its `output` dir) as JSON. `tiny_assets()`
    gives the default tokenizer dirs, `scorers` the `Scorers` of --check_pairs and --dnsmos."""
    from ..config import from_args
    from ..models import locate
    from .pair_check import PairCheckConfig
    from .quality import QualityConfig
    from .sources.config import SourceConfig

    tokenizer_path = locate.tokenizer_dir(args.tokenizer_path)  # Hub ids, native tokenizers (converted once)
    audio_path = locate.audio_tokenizer_dir(args.audio_tokenizer_path)
    if not (tokenizer_path and audio_path):
        tiny = tiny_assets()
        tokenizer_path, audio_path = tokenizer_path or tiny.model_path, audio_path or tiny.audio_tokenizer_path
    limits = dataclasses.replace(from_args(ValidationConfig, args), whisper_audio=args.whisper_audio)
    source_config = from_args(SourceConfig, args)
    jobs = [(args.data, args.output)] if args.output else [
        ([p], cache_dir_for(p, tokenizer_path, audio_path, limits, args.shard_size, source_config)) for p in args.data]
    for data, output in jobs:
        stats = prepare_dataset(data, output, tokenizer_path, audio_path, limits, args.on_bad_sample, args.num_workers,
                                args.shard_size, source_config=source_config,
                                pair_check=from_args(PairCheckConfig, args), quality=from_args(QualityConfig, args),
                                scorers=scorers)  # DataError: exit 65
        print(json.dumps(stats))
    return 0

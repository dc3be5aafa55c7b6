"""The prepare cache: training on a source (a ChatML file, a manifest, a corpus) prepares it once into
`$HIGGS_DS_CACHE/prepared/<spec id>/` and later starts reuse it (training_set.py). The key is the spec of
prepare.py: the source's path, size and mtime (and its sha256 with --content_hash), the tokenizer identities, the
validation limits (with the pair requirement and the Whisper tower's audio-in checks), the shard size and the
prepared format's version.
The ranks of the first node (RANK < LOCAL_WORLD_SIZE, as torchrun and deepspeed number them) share the shards, each
encoding on its own device; rank 0 writes the index and every other rank waits for it (polling: a long prepare
must not hit the collective timeout). The tokenizers leave each rank's memory before training. Several nodes need
$HIGGS_DS_CACHE on a shared filesystem, or the data prepared first (`higgs-ds prepare`).
"""
import logging
import os
import sys
import time

from ..errors import DataError
from .prepared import FAILED, INDEX, is_prepared

log = logging.getLogger(__name__)


def _cached_copy(path, tokenizer_path, audio_tokenizer_path, limits, content_hash, shard_size=256):
    """(the cache dir of source `path`'s prepared copy, its `SourceConfig`); logs when the copy is there."""
    from .prepare import cache_dir_for
    from .sources.config import SourceConfig

    source_config = SourceConfig(content_hash=content_hash)
    out = cache_dir_for(path, tokenizer_path, audio_tokenizer_path, limits, shard_size, source_config)
    if is_prepared(out):
        log.info("%s: using its prepared copy %s", path, out)
    return out, source_config


def node_share(rank):
    """(rank, ranks) of this process among the first node's ranks, which share a prepare; None on other nodes."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return (rank, local_world) if rank < local_world else None


def auto_prepare(path, tokenizer_path, audio_tokenizer_path, limits, rank, poll_s=2.0, content_hash=False,
                 shard_size=256):
    """The prepared dir for source `path` (prepared by the first node's ranks when missing); `path` itself when
    it is already a prepared dir or None. `limits`: the `ValidationConfig` (its --on_bad_sample applies);
    `content_hash`: key the cache by the file's sha256 too (--content_hash)."""
    from .prepare import prepare_dataset

    if path is None or is_prepared(path):
        return path
    out, source_config = _cached_copy(path, tokenizer_path, audio_tokenizer_path, limits, content_hash, shard_size)
    if is_prepared(out):
        return out
    failed, share = os.path.join(out, FAILED), node_share(rank)
    if rank == 0:
        _remove(failed)
    if share is not None:
        log.info("%s: preparing it once into %s, shards shared by %d rank(s)", path, out, share[1])
        try:
            prepare_dataset([path], out, tokenizer_path, audio_tokenizer_path, limits, limits.on_bad_sample,
                            shard_size=shard_size, show_progress=rank == 0 and sys.stderr.isatty(),  # a bar, not log noise
                            source_config=source_config, share=share)
        except BaseException as e:  # the waiting ranks (other nodes too) stop instead of polling forever
            from ..durable import write_atomic

            os.makedirs(out, exist_ok=True)
            write_atomic(failed, f"rank {rank} failed to prepare it into {out}:\n{type(e).__name__}: {e}",
                         f".tmp{os.getpid()}")
            raise
    while not os.path.isfile(os.path.join(out, INDEX)):
        if os.path.isfile(failed):
            with open(failed) as f:
                raise DataError(f"{path}: {f.read()}", "prepare_failed")
        time.sleep(poll_s)
    return out


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

"""Datasets and DataLoaders for training: validated samples, cached codes, per-rank batching.

Batching is either a fixed `batch_size` (seeded `DistributedSampler`) or, with `max_tokens_per_batch`, the
token-budget sampler (sampler.py). Both give every rank the same number of batches.
"""
import logging

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .collate import TrainingCollator
from .dataset import VoiceCloningDataset
from .index_plan import IndexPlan
from .sampler import TokenBudgetBatchSampler
from .validate import validate_files

log = logging.getLogger(__name__)


def load_dataset(path, tokenizer, audio_tokenizer, limit=None, show_progress=True, validation=None, code_cache=None,
                 whisper_processor=None, audio_tokenizer_path=None):
    """Validate `path` (a `ValidationConfig`), then build the dataset from the good samples (with the waveforms
    Whisper needs when `whisper_processor` is given; see dataset.py). A prepared dir (`higgs-ds prepare --output
    DIR`) is opened memory-mapped instead (prepared.py)."""
    from .prepared import is_prepared

    if is_prepared(path):
        from .open_prepared import open_prepared

        return open_prepared(path, tokenizer, audio_tokenizer_path, validation, whisper_processor, limit)
    (report,) = validate_files([path], tokenizer, validation)
    return dataset_from_report(report, tokenizer, audio_tokenizer, limit, show_progress, code_cache, whisper_processor)


def dataset_from_report(report, tokenizer, audio_tokenizer, limit=None, show_progress=True, code_cache=None,
                        whisper_processor=None, dataset_cls=VoiceCloningDataset):
    """The dataset of a `ValidationReport`'s good samples (the first `limit` of them when given); `dataset_cls`:
    `VoiceCloningDataset` or a subclass (`pairs.PairDataset`)."""
    samples = report.samples[:limit] if limit else report.samples
    dataset = dataset_cls(samples, tokenizer, audio_tokenizer, show_progress=show_progress,
                                  code_cache=code_cache, whisper_processor=whisper_processor)
    dataset.report = report  # its summary goes into metrics.json (and from there into the exported model card)
    return dataset


def open_code_cache(config, audio_tokenizer_path):
    """The code cache for this audio tokenizer (`DataConfig.code_cache_dir` or the default), or None with
    `no_code_cache`."""
    from .code_cache import CodeCache

    if config.no_code_cache:
        return None
    return CodeCache.for_tokenizer(audio_tokenizer_path, config.code_cache_dir)


def ignore_stop_signals(worker_id=None):
    """DataLoader `worker_init_fn`: workers ignore SIGTERM/SIGINT sent to the whole process group (SLURM, Ctrl-C),
    so the main process can finish its step and checkpoint (engine/preemption.py); they still exit with it."""
    import signal

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def loader_kwargs(num_workers):
    """DataLoader options: workers (persistent, so each epoch does not restart them), pinned memory on CUDA only."""
    kw = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available())
    if num_workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=ignore_stop_signals)
    return kw


def build_loader(dataset, config, batch_size, rank, world_size, seed, shuffle=True, max_tokens_per_batch=None,
                 num_workers=0, index_plan=False, language_weights=None):
    """Per-rank DataLoader; the collator gets the dataset's Whisper processor (None unless the config needs it);
    `index_plan`: batches carry their host-side index plan (the sync-free step, data/index_plan.py); `language_weights`:
    {tag: weight} of --language_weights (language_mix.py)."""
    from .language_mix import LanguageWeightedSampler, dataset_mix

    collator = getattr(dataset, "collator", None) or TrainingCollator  # pairs.PairDataset has its own
    collate = collator(config, getattr(dataset, "whisper_processor", None), index_plan=index_plan)
    kw, mix = loader_kwargs(num_workers), dataset_mix(dataset, language_weights)
    if max_tokens_per_batch:
        sampler = TokenBudgetBatchSampler.for_dataset(dataset, max_tokens_per_batch, num_replicas=world_size,
                                                      rank=rank, seed=seed, shuffle=shuffle, mix=mix)
        log.info("token-budget batches: %d per rank, %.1f%% padding", len(sampler), 100 * sampler.padding_fraction())
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, **kw)
    if mix is not None:
        sampler = LanguageWeightedSampler(dataset.languages, language_weights, world_size, rank, seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, **kw)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, **kw)


def start_epoch(loader, epoch, skip_batches=0):
    """Reseed the loader's shuffling for `epoch` and skip this rank's first `skip_batches` batches (resume).

    Token-budget batches resume through the sampler's own state; fixed-size batches through the `SkipSampler`
    that `data.resume.resumable` installs.
    """
    if isinstance(loader.batch_sampler, TokenBudgetBatchSampler):
        state = loader.batch_sampler.state_dict()
        state.update(epoch=epoch, consumed=skip_batches)
        loader.batch_sampler.load_state_dict(state)
        return
    loader.sampler.set_epoch(epoch)
    if skip_batches:
        loader.sampler.skip = skip_batches * loader.batch_size


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) or isinstance(v, IndexPlan) else v
            for k, v in batch.items()}

"""The building blocks of every recipe (recipes/sft.py, recipes/dpo.py), in the order a recipe calls them:
`setup_run` (inputs checked, process group, DeepSpeed config, resume point), `build_data_and_model`,
`build_loader`, `build_engine`, then `build_trainer` (checkpointer + resumed state, meter, guards, evaluation) for
`recipes/loop.fit`. Each takes the flags and what was built before it; none knows which recipe calls it.
"""
import dataclasses
import functools
import json
import logging
import os
from typing import TYPE_CHECKING, Optional

import torch

from ..config import from_args

if TYPE_CHECKING:  # the component types, for the annotations only
    from ..data.config import DataConfig
    from ..data.validate import ValidationReport
    from ..engine.checkpoint import CheckpointConfig
    from ..evaluation.config import EvalConfig
    from ..models.loading import ModelPaths
    from .loop import Objective, Trainer

log = logging.getLogger("higgs_ds.train")


@dataclasses.dataclass
class Setup:
    """What `setup_run` settled before the model loads, for the builders after it."""
    paths: "ModelPaths"
    data_cfg: "DataConfig"
    ckpt_cfg: "CheckpointConfig"
    eval_cfg: "EvalConfig"
    reports: "tuple[Optional[ValidationReport], Optional[ValidationReport]]"  # (train, val) of ChatML inputs
    ds_path: str  # the DeepSpeed JSON config
    ds_kwargs: dict  # what `load_ds_config` fills from the flags
    dtype: torch.dtype  # the DeepSpeed config's training dtype: the model loads in it
    resume_dir: Optional[str]  # the checkpoint tag to resume from, None to start fresh
    rank: int
    world: int


def setup_run(args, pair_data=False) -> Optional[Setup]:
    """Logging, data and model paths, every sample validated (before any process group: bad data stops every rank
    here), the process group, the DeepSpeed config (a bad one fails here), the resume point, the output dir checked
    and rank 0's run_config.json; None after --validate_data_only. `pair_data`: every sample must be a preference
    pair."""
    from ..engine.checkpoint import CheckpointConfig, find_resume_dir
    from ..engine.distributed import init_distributed, select_accelerator, share_host_threads
    from ..engine.ds_config import default_ds_config, load_ds_config, model_dtype
    from ..engine.preflight import check_output_dir
    from ..evaluation.config import EvalConfig
    from ..logs import setup_logging
    from ..run_config import write_run_config

    setup_logging(int(os.environ.get("RANK", 0)))
    threads = share_host_threads()
    if threads:
        log.info("torch threads per rank: %d (this host's cores / its ranks; OMP_NUM_THREADS overrides)", threads)
    data_cfg, paths = resolve_inputs(args, pair_data)  # before torch.distributed exists (the tiny assets need that)
    reports = validate_inputs(data_cfg, paths)
    if args.validate_data_only:
        return report_prepared(data_cfg)
    accelerator = select_accelerator()
    ckpt_cfg = from_args(CheckpointConfig, args)
    rank, world = init_distributed(args.dist_timeout_minutes)
    setup_logging(rank)
    ds_path = args.deepspeed or default_ds_config(accelerator)
    ds_kwargs = dict(micro_batch_size=args.batch_size, grad_accum_steps=args.gradient_accumulation_steps,
                     world_size=world, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                     explicit=args.explicit)
    ds_cfg, opt = load_ds_config(ds_path, total_steps=2, warmup_steps=1, **ds_kwargs)
    check_generation_under_zero3(ds_cfg, ds_path, args)
    resume_dir = find_resume_dir(ckpt_cfg.resume, ckpt_cfg.output_dir)  # and on a bad --resume PATH
    torch.manual_seed(args.seed)
    check_output_dir(args.output_dir)  # writable, before anything loads
    if rank == 0:  # what this run uses, every key: `--config` on it replays the run
        write_run_config(args, deepspeed=ds_path, learning_rate=opt["lr"], weight_decay=opt["weight_decay"],
                         batch_size=ds_cfg["train_micro_batch_size_per_gpu"],
                         gradient_accumulation_steps=ds_cfg["gradient_accumulation_steps"])
    return Setup(paths, data_cfg, ckpt_cfg, from_args(EvalConfig, args), reports, ds_path, ds_kwargs,
                 model_dtype(ds_cfg), resume_dir, rank, world)


def check_generation_under_zero3(ds_cfg, ds_path, args):
    """Generation during training (previews, generation eval) is refused under ZeRO-3: its ranks generate different
    lengths, so their forwards (each one all-gathering the weights) would not pair up and the run would hang."""
    from ..errors import ConfigError

    asked = [f"--{k} {getattr(args, k)}" for k in ("sample_every", "eval_generate_every") if getattr(args, k) > 0]
    if asked and ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError(f"{', '.join(asked)}: generation during training is not supported under ZeRO-3 ({ds_path}: "
                          "zero_optimization.stage 3): use a ZeRO-2 config, or score saved adapters afterwards with "
                          "`higgs-ds evaluate --generate`")


def resolve_inputs(args, pair_data=False):
    """(DataConfig, ModelPaths): data paths (the embedded set when unset) and model dirs, checked; `pair_data`:
    every sample must be a preference pair (a `rejected` audio)."""
    from ..assets import ensure_tiny_data, resolve_model_paths
    from ..data.config import DataConfig
    from ..data.validate import ValidationConfig

    data_cfg = from_args(DataConfig, args, validation=from_args(ValidationConfig, args, require_pairs=pair_data))
    if data_cfg.train_data is None:
        train, val = ensure_tiny_data()
        data_cfg = dataclasses.replace(data_cfg, train_data=train, val_data=data_cfg.val_data or val)
    if pair_data:  # pairs are read from their ChatML files (a prepared dir holds no rejected audio)
        refuse_prepared_pairs(data_cfg)
        data_cfg = dataclasses.replace(data_cfg, auto_prepare=False)
    paths = resolve_model_paths(args.model_path, args.audio_tokenizer_path, args.tokenizer_path)
    if data_cfg.auto_prepare and not needs_waveforms(paths):  # a prepared copy from an earlier start: no validation
        from ..data.auto_prepare import prepared_copy

        data_cfg = dataclasses.replace(data_cfg, **{k: prepared_copy(getattr(data_cfg, k), paths.tokenizer_path,
                                                                     paths.audio_tokenizer_path, data_cfg.validation,
                                                                     data_cfg.content_hash)
                                                   for k in ("train_data", "val_data")})
    return data_cfg, paths


def refuse_prepared_pairs(data_cfg):
    from ..data.prepared import is_prepared
    from ..errors import DataError

    for path in (data_cfg.train_data, data_cfg.val_data):
        if path and is_prepared(path):
            raise DataError(f"{path}: --stage dpo reads preference pairs from a ChatML file; a prepared dir holds "
                            "no rejected audio", "rejected")


def needs_waveforms(paths):
    """Whether the model has the Whisper audio tower, which needs waveforms that prepared data does not hold (read
    from config.json: boson's `HiggsAudioConfig` default is true)."""
    with open(os.path.join(paths.model_path, "config.json")) as f:
        return json.load(f).get("encode_whisper_embed", True)


def validate_inputs(data_cfg, paths):
    """Every sample of the train and val data checked and reported, with only the text tokenizer loaded (no model,
    no DeepSpeed); `ValidationReport`s (train, val or None). Raises `DataError` listing every problem."""
    from ..data.prepared import is_prepared
    from ..data.validate import validate_files
    from ..errors import DataError
    from ..models.loading import load_text_tokenizer

    files = [p for p in (data_cfg.train_data, data_cfg.val_data) if p and not is_prepared(p)]  # prepared: done
    reports = dict(zip(files, validate_files(files, load_text_tokenizer(paths.tokenizer_path), data_cfg.validation)))
    for path, report in reports.items():
        if not report.samples:  # --on_bad_sample skip dropped every sample: nothing to train or validate on
            raise DataError(f"{path}: none of its {report.num_read} samples is usable:\n{report.problem_listing()}",
                            "empty_data")
    return reports.get(data_cfg.train_data), reports.get(data_cfg.val_data)


def report_prepared(data_cfg):
    """--validate_data_only on prepared dirs: their stored reports (validated at prepare time); None."""
    from ..data.open_prepared import stored_report
    from ..data.prepared import is_prepared

    for path in (data_cfg.train_data, data_cfg.val_data):
        if path and is_prepared(path):
            stored_report(path, data_cfg.validation.on_bad_sample)


def build_data_and_model(args, setup, dataset_cls=None):
    """(model with its adapter and activation checkpointing, train set, val set or None); the model loaded in the
    training dtype; `dataset_cls`: the dataset type of ChatML inputs (`data.pairs.PairDataset` for pairs)."""
    from ..data.auto_prepare import auto_prepare
    from ..data.loaders import dataset_from_report, open_code_cache
    from ..data.open_prepared import open_prepared
    from ..data.prepared import is_prepared
    from ..engine.activation_checkpointing import ActivationCheckpointingConfig
    from ..models.finetune import FinetuneConfig
    from ..models.loading import load_all, load_whisper_processor

    data_cfg, paths, rank = setup.data_cfg, setup.paths, setup.rank
    whisper = load_whisper_processor(paths.model_path, args.whisper_processor_path)  # None unless the config needs it
    if data_cfg.auto_prepare and whisper is None:  # a ChatML file is prepared once into the cache (rank 0), reused
        data_cfg = dataclasses.replace(data_cfg, **{k: auto_prepare(getattr(data_cfg, k), paths.tokenizer_path,
                                                                    paths.audio_tokenizer_path, data_cfg.validation, rank,
                                                                    content_hash=data_cfg.content_hash)
                                                   for k in ("train_data", "val_data")})
        setup.data_cfg = data_cfg
    prepared = [is_prepared(p) if p else None for p in (data_cfg.train_data, data_cfg.val_data)]
    model, tokenizer, audio_tokenizer = load_all(paths, setup.dtype, audio=not all(p is not False for p in prepared))
    log.info("model loaded in %s (the DeepSpeed config's training dtype)", str(setup.dtype).replace("torch.", ""))
    limit = 8 if args.quick_test else None
    data_kw = dict(show_progress=rank == 0, whisper_processor=whisper,
                   code_cache=open_code_cache(data_cfg, paths.audio_tokenizer_path))
    if dataset_cls is not None:
        data_kw["dataset_cls"] = dataset_cls

    def dataset(path, is_dir, report):  # a prepared dir opens memory-mapped; a ChatML file from its validation
        if is_dir:
            return open_prepared(path, tokenizer, paths.audio_tokenizer_path, data_cfg.validation, whisper, limit,
                                 data_cfg.filter)
        return dataset_from_report(report, tokenizer, audio_tokenizer, limit, **data_kw) if report else None

    train_set, val_set = (dataset(p, d, r) for p, d, r in zip((data_cfg.train_data, data_cfg.val_data), prepared,
                                                             setup.reports))
    log.info("data: %d train samples (%s), %d val samples", len(train_set), data_cfg.train_data, len(val_set or []))
    model = from_args(FinetuneConfig, args).apply(model)
    from_args(ActivationCheckpointingConfig, args).apply(model)
    return model, train_set, val_set


def build_loader(args, setup, train_set, model_config):
    """(resumable per-rank training loader, total optimizer steps)."""
    from ..data.loaders import build_loader as loader_for
    from ..data.resume import resumable

    data_cfg = setup.data_cfg
    loader = loader_for(train_set, model_config, data_cfg.batch_size, setup.rank, setup.world, data_cfg.seed,
                        max_tokens_per_batch=data_cfg.max_tokens_per_batch, num_workers=data_cfg.num_workers,
                        index_plan=True,  # host-side index plan -> sync-free forward + loss (data/index_plan.py)
                        language_weights=data_cfg.language_weights)
    total_steps = max(1, len(loader) // args.gradient_accumulation_steps) * args.num_epochs
    if args.max_steps > 0:
        total_steps = min(total_steps, args.max_steps)
    return resumable(loader), total_steps


def build_engine(args, setup, model, total_steps):
    """(DeepSpeed engine, LR scheduler or None, configured LR) around the trainable parameters of `model`."""
    import deepspeed

    from ..engine.checkpoint import needs_universal
    from ..engine.ds_config import load_ds_config
    from ..engine.preflight import check_free_space

    ds_config, opt_kwargs = load_ds_config(setup.ds_path, total_steps=total_steps,
                                           warmup_steps=int(args.warmup_ratio * total_steps), **setup.ds_kwargs)
    if needs_universal(setup.resume_dir, setup.world):  # another world size wrote it: DeepSpeed's universal checkpoint
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    params = [p for p in model.parameters() if p.requires_grad]
    check_free_space(args.output_dir, sum(p.numel() for p in params), args.save_every, args.keep_last)
    optimizer = torch.optim.AdamW(params, **opt_kwargs)
    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    log.info("DeepSpeed: ZeRO stage %d, %s, world %d, micro batch %d x accum %d; %d steps",
             engine.zero_optimization_stage(), "bf16" if engine.bfloat16_enabled() else "fp32", setup.world,
             args.batch_size, args.gradient_accumulation_steps, total_steps)
    return engine, scheduler, opt_kwargs["lr"]


def build_trainer(args, setup, engine, scheduler, lr, loader, val_set, total_steps, objective: "Objective") -> "Trainer":
    """Checkpointer + resumed state (EMA among its extras), meter, guards, preview and generation eval: the
    `Trainer` of `loop.fit`, for the recipe's `objective` (its loss and evaluation)."""
    from ..engine.checkpoint import Checkpointer, TrainerState
    from ..engine.ema import EmaConfig
    from ..engine.numerics import StepGuard
    from ..evaluation.config import GenerationEvalConfig
    from ..evaluation.in_training import setup_quality
    from ..inference.preview import build_preview
    from ..models.finetune import artefact_name, save_to
    from .loop import Trainer

    ckpt_cfg, rank, world = setup.ckpt_cfg, setup.rank, setup.world
    ckpt = Checkpointer.from_config(engine, ckpt_cfg, rank)
    ema = from_args(EmaConfig, args).build(engine)
    ckpt.extras += [ema] if ema is not None else []  # saved in every checkpoint, restored on resume
    ckpt.extras += objective.extras  # the recipe's own state (round state, ...)
    if ckpt_cfg.resume and setup.resume_dir is None:
        log.info("--resume %s: no complete checkpoint in %s, starting fresh", ckpt_cfg.resume, ckpt.dir)
    state = ckpt.load(setup.resume_dir) if setup.resume_dir else TrainerState()
    summary = run_summary(args, setup, loader.dataset, val_set)
    meter = build_meter(args, engine, total_steps, state.step, rank, world, summary["args"])
    summary["flops_per_token"] = meter.fpt
    stop_at = min(total_steps, state.step + args.stop_after_steps) if args.stop_after_steps > 0 else total_steps
    save_best = functools.partial(save_to, engine, args.finetune, tokenizer_dir=setup.paths.tokenizer_path, rank=rank)
    gen_eval, best = setup_quality(from_args(GenerationEvalConfig, args), engine.module, setup.paths, val_set, meter,
                                   rank, world, save_best, artefact_name(args.finetune))
    return Trainer(
        engine=engine, scheduler=scheduler, loader=loader, val_set=val_set, objective=objective, checkpointer=ckpt,
        state=state, meter=meter, guard=StepGuard(args.max_consecutive_skips, args.output_dir, state.history),
        preview=build_preview(rank, setup.eval_cfg, engine, setup.paths, val_set, meter.sinks), gen_eval=gen_eval,
        best=best, ema=ema, eval_cfg=setup.eval_cfg, rank=rank, world=world, total_steps=total_steps,
        stop_at=stop_at, accum=args.gradient_accumulation_steps, num_epochs=args.num_epochs,
        log_every=args.log_every, audio_out_id=engine.module.config.audio_out_token_idx, fallback_lr=lr,
        summary=summary)


def run_summary(args, setup, train_set, val_set):
    """The facts of this run for metrics.json (and from there the exported model card)."""
    paths = setup.paths
    facts = {"world_size": setup.world, "model_path": paths.model_path, "finetune": args.finetune,
             "audio_tokenizer_path": paths.audio_tokenizer_path, "tokenizer_path": paths.tokenizer_path,
             "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}, "data": {}}
    for split, path, ds in (("train", setup.data_cfg.train_data, train_set), ("val", setup.data_cfg.val_data, val_set)):
        index = getattr(ds, "index", None)  # a prepared dir: the user's files, the stored report
        facts[f"{split}_data"] = ", ".join(s["path"] for s in index["plan"]["sources"]) if index else path
        if index:
            facts[f"{split}_prepared"], facts["data"][split] = path, index["report"]
            if getattr(ds, "dropped", None) is not None:  # --filter: what each rule dropped
                facts[f"{split}_filtered"] = ds.dropped
        elif getattr(ds, "report", None) is not None:
            facts["data"][split] = ds.report.to_dict()
    return facts


def build_meter(args, engine, total_steps, start_step, rank, world, run_config):
    """The step meter and its sinks: TensorBoard, output_dir/metrics.jsonl, W&B when asked for (engine/sinks.py)."""
    from ..engine.activation_checkpointing import ActivationCheckpointingConfig
    from ..engine.metrics import MetricsConfig, StepMeter, default_tensorboard_dir, flops_per_token, peak_flops
    from ..engine.sinks import build_sinks
    from ..models.unwrap import base_higgs_model

    cfg = from_args(MetricsConfig, args)
    sinks = build_sinks(rank, default_tensorboard_dir(args.output_dir, cfg.tensorboard_dir),
                        os.path.join(args.output_dir, "metrics.jsonl"), cfg.wandb_project, run_config)
    model = engine.module
    recompute = from_args(ActivationCheckpointingConfig, args).recompute_fraction(len(base_higgs_model(model).layers))
    return StepMeter(rank, world, total_steps, start_step, fpt=flops_per_token(model, recompute),
                     peak=peak_flops(engine.bfloat16_enabled()), progress=not cfg.no_progress, sinks=sinks)

"""The building blocks of every recipe (recipes/sft.py, recipes/dpo.py), in the order a recipe calls them:
`setup_run` (the root `RunConfig` from the flags, inputs checked, process group, DeepSpeed config, resume point),
`build_data_and_model`, `build_loader`, `build_engine`, then `build_trainer` (checkpointer + resumed state, meter,
guards, evaluation) for `recipes/loop.fit`. Each takes the `Setup` and what was built before it; none knows which
recipe calls it.
"""
import dataclasses
import functools
import json
import logging
import os
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:  # the component types, for the annotations only
    from ..data.config import DataConfig
    from ..models.loading import ModelPaths
    from ..run_config import RunConfig
    from .loop import Objective, Trainer

log = logging.getLogger("higgs_ds.train")


@dataclasses.dataclass
class Setup:
    """What `setup_run` settled before the model loads, for the builders after it."""
    cfg: "RunConfig"  # the run's component configs, one per section
    paths: "ModelPaths"
    data_cfg: "DataConfig"  # cfg.data with the paths resolved (the embedded set when unset, prepared copies)
    ds_path: str  # the DeepSpeed JSON config
    ds_kwargs: dict  # what `load_ds_config` fills from the flags
    dtype: torch.dtype  # the DeepSpeed config's training dtype: the model loads in it
    zero_stage: int  # the DeepSpeed config's zero_optimization.stage
    resume_dir: Optional[str]  # the checkpoint tag to resume from, None to start fresh
    rank: int
    world: int
    flags: dict  # the parsed flags, for metrics.json and the sinks' run config


def setup_run(args, pair_data=False) -> Optional[Setup]:
    """Logging, data and model paths, every source prepared once (validated, before any process group: bad data
    stops every rank here), the process group, the DeepSpeed config (a bad one fails here), the resume point, the
    output dir checked and rank 0's run_config.json; None after --validate_data_only. `pair_data`: every sample must
    be a preference pair."""
    from ..engine.checkpoint import find_resume_dir
    from ..engine.distributed import init_distributed, select_accelerator, share_host_threads
    from ..engine.ds_config import default_ds_config, load_ds_config, model_dtype
    from ..engine.preflight import check_output_dir
    from ..logs import setup_logging
    from ..run_config import RunConfig, write_run_config

    setup_logging(int(os.environ.get("RANK", 0)))
    threads = share_host_threads()
    if threads:
        log.info("torch threads per rank: %d (this host's cores / its ranks; OMP_NUM_THREADS overrides)", threads)
    cfg = RunConfig.from_args(args, require_pairs=pair_data)
    data_cfg, paths = resolve_inputs(cfg)  # before torch.distributed exists (the tiny assets need that)
    data_cfg = validate_inputs(data_cfg, paths)  # prepared (validated) once: bad data stops every rank here
    if args.validate_data_only:
        return report_prepared(data_cfg)
    accelerator = select_accelerator()
    rank, world = init_distributed(cfg.engine.dist_timeout_minutes)
    setup_logging(rank)
    ds_path, training = cfg.engine.deepspeed or default_ds_config(accelerator), cfg.training
    ds_kwargs = dict(micro_batch_size=training.batch_size, grad_accum_steps=training.gradient_accumulation_steps,
                     world_size=world, learning_rate=training.learning_rate, weight_decay=training.weight_decay,
                     explicit=args.explicit)  # the flags set: a DeepSpeed value contradicting one is an error
    ds_cfg, opt = load_ds_config(ds_path, total_steps=2, warmup_steps=1, **ds_kwargs)
    zero_stage = ds_cfg.get("zero_optimization", {}).get("stage", 0)
    check_generation_under_zero3(zero_stage, ds_path, cfg)
    resume_dir = find_resume_dir(cfg.checkpoints.resume, cfg.checkpoints.output_dir)  # and on a bad --resume PATH
    torch.manual_seed(training.seed)
    check_output_dir(training.output_dir)  # writable, before anything loads
    if rank == 0:  # what this run uses, every key: `--config` on it replays the run
        write_run_config(args, deepspeed=ds_path, learning_rate=opt["lr"], weight_decay=opt["weight_decay"],
                         batch_size=ds_cfg["train_micro_batch_size_per_gpu"],
                         gradient_accumulation_steps=ds_cfg["gradient_accumulation_steps"])
    flags = {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}
    return Setup(cfg, paths, data_cfg, ds_path, ds_kwargs, model_dtype(ds_cfg),
                 zero_stage, resume_dir, rank, world, flags)


def check_generation_under_zero3(zero_stage, ds_path, cfg):
    """Generation during training (previews, generation eval) is refused under ZeRO-3: its ranks generate different
    lengths, so their forwards (each one all-gathering the weights) would not pair up and the run would hang."""
    from ..errors import ConfigError

    asked = [f"--{k} {v}" for k, v in (("sample_every", cfg.eval.sample_every),
                                       ("eval_generate_every", cfg.generation_eval.eval_generate_every)) if v > 0]
    if asked and zero_stage == 3:
        raise ConfigError(f"{', '.join(asked)}: generation during training is not supported under ZeRO-3 ({ds_path}: "
                          "zero_optimization.stage 3): use a ZeRO-2 config, or score saved adapters afterwards with "
                          "`higgs-ds evaluate --generate`")


def resolve_inputs(cfg):
    """(DataConfig, ModelPaths): data paths (the embedded set when unset) and model dirs, checked."""
    from ..assets import ensure_tiny_data, resolve_model_paths

    data_cfg = cfg.data
    if data_cfg.train_data is None:
        train, val = ensure_tiny_data()
        data_cfg = dataclasses.replace(data_cfg, train_data=train, val_data=data_cfg.val_data or val)
    paths = resolve_model_paths(cfg.model.model_path, cfg.model.audio_tokenizer_path, cfg.model.tokenizer_path)
    return data_cfg, paths


def needs_waveforms(paths):
    """Whether the model has the Whisper audio tower, whose audio-in clips the prepare step checks (read from
    config.json: boson's `HiggsAudioConfig` default is true)."""
    with open(os.path.join(paths.model_path, "config.json")) as f:
        return json.load(f).get("encode_whisper_embed", True)


def validate_inputs(data_cfg, paths):
    """The train and val data prepared once (data/training_set.py: validated, reused by later starts), with no model
    and no DeepSpeed loaded; returns `data_cfg` naming the prepared dirs. Raises `DataError` listing every problem."""
    from ..data.training_set import prepare_training_set

    rank = int(os.environ.get("RANK", 0))
    prepared = {k: prepare_training_set(getattr(data_cfg, k), paths.tokenizer_path, paths.audio_tokenizer_path,
                                        data_cfg.validation, needs_waveforms(paths), rank, data_cfg.content_hash)
                for k in ("train_data", "val_data")}
    return dataclasses.replace(data_cfg, **prepared)


def report_prepared(data_cfg):
    """--validate_data_only: the stored reports of the prepared data (--on_bad_sample applied); None."""
    from ..data.open_prepared import stored_report

    for path in (data_cfg.train_data, data_cfg.val_data):
        if path:
            stored_report(path, data_cfg.validation.on_bad_sample)


def build_data_and_model(setup, dataset_cls=None):
    """(model with its adapter and activation checkpointing, train set, val set or None) from the prepared data; the
    model loaded in the training dtype; `dataset_cls`: a view over each prepared set (`data.pairs.PairDataset`)."""
    from ..data.training_set import open_training_set
    from ..models.loading import load_all, load_whisper_processor

    cfg, data_cfg, paths = setup.cfg, setup.data_cfg, setup.paths
    whisper = load_whisper_processor(paths.model_path, cfg.model.whisper_processor_path)  # None unless needed
    model, tokenizer, _ = load_all(paths, setup.dtype, audio=False)  # the codes are prepared: no audio tokenizer
    log.info("model loaded in %s (the DeepSpeed config's training dtype)", str(setup.dtype).replace("torch.", ""))

    def dataset(path):  # memory-mapped; the recipe's view over it (preference pairs)
        ds = open_training_set(path, tokenizer, paths.tokenizer_path, paths.audio_tokenizer_path, data_cfg.validation,
                               whisper, 8 if cfg.training.quick_test else None, data_cfg.filter, setup.rank)
        return dataset_cls(ds) if dataset_cls is not None else ds

    train_set, val_set = (dataset(p) if p else None for p in (data_cfg.train_data, data_cfg.val_data))
    log.info("data: %d train samples (%s), %d val samples", len(train_set), data_cfg.train_data, len(val_set or []))
    model = cfg.finetune.apply(model)
    cfg.activation_checkpointing.apply(model)
    return model, train_set, val_set


def build_loader(setup, train_set, model_config):
    """(resumable per-rank training loader, total optimizer steps)."""
    from ..data.loaders import build_loader as loader_for
    from ..data.resume import resumable

    data_cfg = setup.data_cfg
    loader = loader_for(train_set, model_config, data_cfg.batch_size, setup.rank, setup.world, data_cfg.seed,
                        max_tokens_per_batch=data_cfg.max_tokens_per_batch, num_workers=data_cfg.num_workers,
                        index_plan=True,  # host-side index plan -> sync-free forward + loss (data/index_plan.py)
                        language_weights=data_cfg.language_weights)
    training = setup.cfg.training
    total_steps = max(1, len(loader) // training.gradient_accumulation_steps) * training.num_epochs
    if training.max_steps > 0:
        total_steps = min(total_steps, training.max_steps)
    return resumable(loader), total_steps


def build_engine(setup, model, total_steps):
    """(DeepSpeed engine, LR scheduler or None, configured LR) around the trainable parameters of `model`."""
    import deepspeed

    from ..engine.checkpoint import needs_universal
    from ..engine.ds_config import load_ds_config
    from ..engine.preflight import check_free_space

    cfg = setup.cfg
    ds_config, opt_kwargs = load_ds_config(setup.ds_path, total_steps=total_steps,
                                           warmup_steps=int(cfg.training.warmup_ratio * total_steps),
                                           **setup.ds_kwargs)
    if needs_universal(setup.resume_dir, setup.world):  # another world size wrote it: DeepSpeed's universal checkpoint
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    params = [p for p in model.parameters() if p.requires_grad]
    check_free_space(cfg.checkpoints.output_dir, sum(p.numel() for p in params), cfg.checkpoints.save_every,
                     cfg.checkpoints.keep_last)
    optimizer = torch.optim.AdamW(params, **opt_kwargs)
    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    log.info("DeepSpeed: ZeRO stage %d, %s, world %d, micro batch %d x accum %d; %d steps",
             engine.zero_optimization_stage(), "bf16" if engine.bfloat16_enabled() else "fp32", setup.world,
             cfg.training.batch_size, cfg.training.gradient_accumulation_steps, total_steps)
    return engine, scheduler, opt_kwargs["lr"]


def build_trainer(setup, engine, scheduler, lr, loader, val_set, total_steps, objective: "Objective") -> "Trainer":
    """Checkpointer + resumed state (EMA among its extras), meter, guards, preview and generation eval: the
    `Trainer` of `loop.fit`, for the recipe's `objective` (its loss and evaluation)."""
    from ..engine.checkpoint import Checkpointer, TrainerState
    from ..engine.numerics import StepGuard
    from ..evaluation.in_training import setup_quality
    from ..inference.preview import build_preview
    from ..models.finetune import artefact_name, save_to
    from .loop import Trainer

    cfg, rank, world = setup.cfg, setup.rank, setup.world
    ckpt = Checkpointer.from_config(engine, cfg.checkpoints, rank)
    ema = cfg.ema.build(engine)
    ckpt.extras += [ema] if ema is not None else []  # saved in every checkpoint, restored on resume
    ckpt.extras += objective.extras  # the recipe's own state
    if cfg.checkpoints.resume and setup.resume_dir is None:
        log.info("--resume %s: no complete checkpoint in %s, starting fresh", cfg.checkpoints.resume, ckpt.dir)
    state = ckpt.load(setup.resume_dir) if setup.resume_dir else TrainerState()
    summary = run_summary(setup, loader.dataset, val_set)
    meter = build_meter(setup, engine, total_steps, state.step)
    summary["flops_per_token"] = meter.fpt
    training, finetune = cfg.training, cfg.finetune.finetune
    stop_at = min(total_steps, state.step + training.stop_after_steps) if training.stop_after_steps else total_steps
    save_best = functools.partial(save_to, engine, finetune, tokenizer_dir=setup.paths.tokenizer_path, rank=rank)
    gen_eval, best = setup_quality(cfg.generation_eval, engine.module, setup.paths, val_set, meter, rank, world,
                                   save_best, artefact_name(finetune))
    return Trainer(
        engine=engine, scheduler=scheduler, loader=loader, val_set=val_set, objective=objective, checkpointer=ckpt,
        state=state, meter=meter, guard=StepGuard(training.max_consecutive_skips, training.output_dir, state.history),
        preview=build_preview(rank, cfg.eval, engine, setup.paths, val_set, meter.sinks), gen_eval=gen_eval,
        best=best, ema=ema, eval_cfg=cfg.eval, rank=rank, world=world, total_steps=total_steps, stop_at=stop_at,
        accum=training.gradient_accumulation_steps, num_epochs=training.num_epochs, log_every=cfg.metrics.log_every,
        audio_out_id=engine.module.config.audio_out_token_idx, fallback_lr=lr, summary=summary)


def run_summary(setup, train_set, val_set):
    """The facts of this run for metrics.json (and from there the exported model card)."""
    paths = setup.paths
    facts = {"world_size": setup.world, "model_path": paths.model_path, "finetune": setup.cfg.finetune.finetune,
             "audio_tokenizer_path": paths.audio_tokenizer_path, "tokenizer_path": paths.tokenizer_path,
             "args": setup.flags, "data": {}}
    for split, path, ds in (("train", setup.data_cfg.train_data, train_set), ("val", setup.data_cfg.val_data, val_set)):
        if ds is None:
            continue
        index = ds.index  # the prepared dir's: the user's sources and the report stored at prepare time
        facts[f"{split}_data"] = ", ".join(s["path"] for s in index["spec"]["sources"])
        facts[f"{split}_prepared"], facts["data"][split] = path, index["report"]
        if getattr(ds, "dropped", None) is not None:  # a --filter view: what each rule dropped
            facts[f"{split}_filtered"] = ds.dropped
    return facts


def build_meter(setup, engine, total_steps, start_step):
    """The step meter and its sinks: TensorBoard, output_dir/metrics.jsonl, W&B when asked for (engine/sinks.py)."""
    from ..engine.metrics import StepMeter, default_tensorboard_dir, flops_per_token, peak_flops
    from ..engine.sinks import build_sinks
    from ..models.unwrap import base_higgs_model

    cfg, out = setup.cfg.metrics, setup.cfg.training.output_dir
    sinks = build_sinks(setup.rank, default_tensorboard_dir(out, cfg.tensorboard_dir),
                        os.path.join(out, "metrics.jsonl"), cfg.wandb_project, setup.flags)
    model = engine.module
    recompute = setup.cfg.activation_checkpointing.recompute_fraction(len(base_higgs_model(model).layers))
    return StepMeter(setup.rank, setup.world, total_steps, start_step, fpt=flops_per_token(model, recompute),
                     peak=peak_flops(engine.bfloat16_enabled()), progress=not cfg.no_progress, sinks=sinks)

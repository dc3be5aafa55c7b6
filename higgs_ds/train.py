"""Train a LoRA adapter for Higgs Audio v2 voice cloning with DeepSpeed.

    deepspeed --num_gpus 8 higgs_ds/train.py --deepspeed ds_configs/zero2.json --model_path ... --train_data ...
    DS_ACCELERATOR=cpu deepspeed --num_accelerators 2 higgs_ds/train.py --deepspeed ds_configs/cpu_zero2.json
    python higgs_ds/train.py --quick_test            # one process, embedded tiny default
    launch/single_node.sh ... --save_every 500 --resume auto   # restartable; see docs/FLAGS.md, launch/

Reads top to bottom: `build(args) -> Components` (paths, data, model + LoRA, DeepSpeed engine, resume state,
meters), then `fit(components)` (the loop, then the adapter). The path of a sample and of a step:
docs/ARCHITECTURE.md. Each component takes its own config dataclass (higgs_ds/config.py).
"""
import os
import sys

if __name__ == "__main__":  # run as a script: do not let higgs_ds/ itself shadow top-level modules
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import dataclasses
import functools
import itertools
import json
import logging
import time
from typing import TYPE_CHECKING, Callable, Optional

import torch

from higgs_ds.args import default_ds_config, parse_args
from higgs_ds.config import from_args
from higgs_ds.errors import EXIT_NONFINITE, EXIT_PREEMPTED, run_entry_point

if TYPE_CHECKING:  # the component types, for the annotations only (train.py imports them where it builds them)
    from deepspeed import DeepSpeedEngine
    from torch.optim.lr_scheduler import LRScheduler
    from torch.utils.data import DataLoader, Dataset

    from higgs_ds.data.config import DataConfig
    from higgs_ds.engine.checkpoint import CheckpointConfig, Checkpointer, TrainerState
    from higgs_ds.engine.ema import WeightAverage
    from higgs_ds.engine.metrics import StepMeter
    from higgs_ds.engine.numerics import StepGuard
    from higgs_ds.evaluation.best import BestKeeper
    from higgs_ds.evaluation.config import EvalConfig
    from higgs_ds.evaluation.in_training import GenerationEval
    from higgs_ds.inference.preview import AudioPreview
    from higgs_ds.loss import LossConfig, LossOutput
    from higgs_ds.models.loading import ModelPaths
    from higgs_ds.recipes.dpo import DPOStage

log = logging.getLogger("higgs_ds.train")


@dataclasses.dataclass
class Setup:
    """What `build` settled before the model loads, for the loop's builders."""
    paths: "ModelPaths"
    data_cfg: "DataConfig"
    ckpt_cfg: "CheckpointConfig"
    eval_cfg: "EvalConfig"
    resume_dir: Optional[str]  # the checkpoint tag to resume from, None to start fresh
    rank: int
    world: int
    stage: "Optional[DPOStage]"  # --stage hooks (recipes/): None for SFT


@dataclasses.dataclass
class Components:
    """Everything `fit` needs, built by `build`."""
    engine: "DeepSpeedEngine"
    scheduler: "Optional[LRScheduler]"  # None when the DeepSpeed config has no scheduler section
    loader: "DataLoader"  # resumable (data/resume.py)
    val_set: "Optional[Dataset]"
    loss_fn: "Callable[..., LossOutput]"  # (batch, denominators=None) -> LossOutput
    checkpointer: "Checkpointer"
    state: "TrainerState"
    meter: "StepMeter"
    guard: "StepGuard"
    preview: "Optional[AudioPreview]"
    gen_eval: "Optional[GenerationEval]"
    best: "Optional[BestKeeper]"  # --keep_best
    ema: "Optional[WeightAverage]"  # --ema_decay
    loss_cfg: "LossConfig"
    eval_cfg: "EvalConfig"
    rank: int
    world: int
    total_steps: int
    stop_at: int
    accum: int
    num_epochs: int
    log_every: int
    global_norm: bool
    audio_out_id: int
    fallback_lr: float
    summary: dict  # facts for metrics.json
    stage: "Optional[DPOStage]" = None  # --stage hooks (recipes/): None for SFT


def main(argv=None):
    """Entry point: a user error is one clear message and its exit code (docs/ERRORS.md)."""
    return run_entry_point(_main, argv)


def _main(argv):
    from higgs_ds.engine.distributed import report_failure
    from higgs_ds.engine.numerics import NonFiniteAbort

    args = parse_args(argv)
    try:
        if args.create_sample_data:
            return create_sample_data(args)
        components = build(args)
        return 0 if components is None else fit(components)
    except NonFiniteAbort as e:
        log.error("%s", e)
        return EXIT_NONFINITE
    except Exception as e:
        report_failure(e, log)
        raise


def create_sample_data(args):
    from higgs_ds.data.synthetic import create_sample_data as write

    train, val = write(args.create_sample_data, num_samples=args.num_sample_data, seed=args.seed)
    print(f"wrote {args.num_sample_data} samples: {train} and {val}")
    return 0


def build(args) -> Optional[Components]:
    """Paths, data, model + LoRA, engine, resume state and meters; None after --validate_data_only."""
    from higgs_ds.engine.checkpoint import CheckpointConfig, find_resume_dir
    from higgs_ds.engine.distributed import init_distributed, select_accelerator, share_host_threads
    from higgs_ds.engine.ds_config import load_ds_config, model_dtype
    from higgs_ds.engine.preflight import check_output_dir
    from higgs_ds.evaluation.config import EvalConfig
    from higgs_ds.logs import setup_logging
    from higgs_ds.run_config import write_run_config

    setup_logging(int(os.environ.get("RANK", 0)))
    threads = share_host_threads()
    if threads:
        log.info("torch threads per rank: %d (this host's cores / its ranks; OMP_NUM_THREADS overrides)", threads)
    stage = stage_for(args)
    data_cfg, paths = resolve_inputs(args, stage)  # before torch.distributed exists (the tiny assets' build needs that)
    data_cfg = validate_inputs(data_cfg, paths)  # prepared (validated) once: bad data stops every rank here
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
    ds_cfg, opt = load_ds_config(ds_path, total_steps=2, warmup_steps=1, **ds_kwargs)  # a bad config fails here
    check_generation_under_zero3(ds_cfg, ds_path, args)
    resume_dir = find_resume_dir(ckpt_cfg.resume, ckpt_cfg.output_dir)  # and on a bad --resume PATH
    torch.manual_seed(args.seed)
    check_output_dir(args.output_dir)  # writable, before anything loads
    if rank == 0:  # what this run uses, every key: `--config` on it replays the run
        write_run_config(args, deepspeed=ds_path, learning_rate=opt["lr"], weight_decay=opt["weight_decay"],
                         batch_size=ds_cfg["train_micro_batch_size_per_gpu"],
                         gradient_accumulation_steps=ds_cfg["gradient_accumulation_steps"])
    model, train_set, val_set = build_data_and_model(args, data_cfg, paths, rank, model_dtype(ds_cfg), stage)
    loader, total_steps = build_loader(args, data_cfg, train_set, model.config, rank, world)
    engine, scheduler, lr = build_engine(args, model, ds_path, ds_kwargs, total_steps, resume_dir, world)
    setup = Setup(paths, data_cfg, ckpt_cfg, from_args(EvalConfig, args), resume_dir, rank, world, stage)
    return build_loop(args, setup, engine, scheduler, lr, loader, val_set, total_steps)


def stage_for(args):
    """The hooks of a stage other than SFT (recipes/): None for SFT, a `DPOStage` for --stage dpo (imported only
    then: validation must not load the model stack)."""
    if args.stage == "sft":
        return None
    from higgs_ds.recipes.dpo import DPOStage

    return DPOStage(args)


def check_generation_under_zero3(ds_cfg, ds_path, args):
    """Generation during training (previews, generation eval) is refused under ZeRO-3: its ranks generate different
    lengths, so their forwards (each one all-gathering the weights) would not pair up and the run would hang."""
    from higgs_ds.errors import ConfigError

    asked = [f"--{k} {getattr(args, k)}" for k in ("sample_every", "eval_generate_every") if getattr(args, k) > 0]
    if asked and ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError(f"{', '.join(asked)}: generation during training is not supported under ZeRO-3 ({ds_path}: "
                          "zero_optimization.stage 3): use a ZeRO-2 config, or score saved adapters afterwards with "
                          "`higgs-ds evaluate --generate`")


def resolve_inputs(args, stage=None):
    """(DataConfig, ModelPaths): data paths (the embedded set when unset) and model dirs, checked; `stage`: the
    --stage hooks (their data config)."""
    from higgs_ds.assets import ensure_tiny_data, resolve_model_paths
    from higgs_ds.data.config import DataConfig
    from higgs_ds.data.validate import ValidationConfig

    data_cfg = from_args(DataConfig, args, validation=from_args(ValidationConfig, args))
    if data_cfg.train_data is None:
        train, val = ensure_tiny_data()
        data_cfg = dataclasses.replace(data_cfg, train_data=train, val_data=data_cfg.val_data or val)
    if stage is not None:
        data_cfg = stage.data_config(data_cfg)
    paths = resolve_model_paths(args.model_path, args.audio_tokenizer_path, args.tokenizer_path)
    return data_cfg, paths


def needs_waveforms(paths):
    """Whether the model has the Whisper audio tower, whose audio-in clips the prepare step checks (read from
    config.json: boson's `HiggsAudioConfig` default is true)."""
    with open(os.path.join(paths.model_path, "config.json")) as f:
        return json.load(f).get("encode_whisper_embed", True)


def validate_inputs(data_cfg, paths):
    """The train and val data prepared once (training_set.py: validated, reused by later starts), with no model and
    no DeepSpeed loaded; returns `data_cfg` naming the prepared dirs. Raises `DataError` listing every problem."""
    from higgs_ds.data.training_set import prepare_training_set

    rank = int(os.environ.get("RANK", 0))
    prepared = {k: prepare_training_set(getattr(data_cfg, k), paths.tokenizer_path, paths.audio_tokenizer_path,
                                        data_cfg.validation, needs_waveforms(paths), rank, data_cfg.content_hash)
                for k in ("train_data", "val_data")}
    return dataclasses.replace(data_cfg, **prepared)


def report_prepared(data_cfg):
    """--validate_data_only: the stored reports of the prepared data (--on_bad_sample applied); None."""
    from higgs_ds.data.open_prepared import stored_report

    for path in (data_cfg.train_data, data_cfg.val_data):
        if path:
            stored_report(path, data_cfg.validation.on_bad_sample)


def build_data_and_model(args, data_cfg, paths, rank, dtype=torch.float32, stage=None):
    """(model with LoRA and activation checkpointing, train set, val set or None) from the prepared data; the model
    loaded in `dtype` (the DeepSpeed config's training dtype); `stage`: the --stage hooks (its dataset type)."""
    from higgs_ds.data.training_set import open_training_set
    from higgs_ds.engine.activation_checkpointing import ActivationCheckpointingConfig
    from higgs_ds.models.finetune import AdapterConfig
    from higgs_ds.models.loading import load_all, load_whisper_processor

    whisper = load_whisper_processor(paths.model_path, args.whisper_processor_path)  # None unless the config needs it
    model, tokenizer, _ = load_all(paths, dtype, audio=False)  # the codes are prepared: no audio tokenizer
    log.info("model loaded in %s (the DeepSpeed config's training dtype)", str(dtype).replace("torch.", ""))

    def dataset(path):  # memory-mapped; a --stage's view over it (preference pairs)
        ds = open_training_set(path, tokenizer, paths.tokenizer_path, paths.audio_tokenizer_path, data_cfg.validation,
                               whisper, 8 if args.quick_test else None, data_cfg.filter, rank)
        return stage.dataset_cls(ds) if stage is not None else ds

    train_set, val_set = (dataset(p) if p else None for p in (data_cfg.train_data, data_cfg.val_data))
    log.info("data: %d train samples (%s), %d val samples", len(train_set), data_cfg.train_data, len(val_set or []))
    model = from_args(AdapterConfig, args).apply(model)
    from_args(ActivationCheckpointingConfig, args).apply(model)
    return model, train_set, val_set


def build_loader(args, data_cfg, train_set, model_config, rank, world):
    """(resumable per-rank training loader, total optimizer steps)."""
    from higgs_ds.data.loaders import build_loader as loader_for
    from higgs_ds.data.resume import resumable

    loader = loader_for(train_set, model_config, data_cfg.batch_size, rank, world, data_cfg.seed,
                        max_tokens_per_batch=data_cfg.max_tokens_per_batch, num_workers=data_cfg.num_workers,
                        plan=True,  # host-side index plan -> sync-free forward + loss (data/plan.py)
                        language_weights=data_cfg.language_weights)
    total_steps = max(1, len(loader) // args.gradient_accumulation_steps) * args.num_epochs
    if args.max_steps > 0:
        total_steps = min(total_steps, args.max_steps)
    return resumable(loader), total_steps


def build_engine(args, model, ds_path, ds_kwargs, total_steps, resume_dir, world):
    """(DeepSpeed engine, LR scheduler, configured LR) around the trainable parameters of `model`."""
    import deepspeed

    from higgs_ds.engine.checkpoint import needs_universal
    from higgs_ds.engine.ds_config import load_ds_config
    from higgs_ds.engine.preflight import check_free_space

    ds_config, opt_kwargs = load_ds_config(ds_path, total_steps=total_steps,
                                           warmup_steps=int(args.warmup_ratio * total_steps), **ds_kwargs)
    if needs_universal(resume_dir, world):  # another world size wrote it: DeepSpeed's universal checkpoint
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    params = [p for p in model.parameters() if p.requires_grad]
    check_free_space(args.output_dir, sum(p.numel() for p in params), args.save_every, args.keep_last)
    optimizer = torch.optim.AdamW(params, **opt_kwargs)
    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    log.info("DeepSpeed: ZeRO stage %d, %s, world %d, micro batch %d x accum %d; %d steps",
             engine.zero_optimization_stage(), "bf16" if engine.bfloat16_enabled() else "fp32", world,
             args.batch_size, args.gradient_accumulation_steps, total_steps)
    return engine, scheduler, opt_kwargs["lr"]


def build_loop(args, setup, engine, scheduler, lr, loader, val_set, total_steps):
    """Loss, checkpointer + resumed state, meter, preview, guards: the `Components` of `fit`."""
    from higgs_ds.engine.checkpoint import Checkpointer, TrainerState
    from higgs_ds.engine.ema import EmaConfig
    from higgs_ds.engine.numerics import StepGuard
    from higgs_ds.evaluation.config import GenerationEvalConfig
    from higgs_ds.evaluation.in_training import setup_quality
    from higgs_ds.evaluation.validation import build_preview
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.finetune import artefact_name, save_to

    loss_cfg = from_args(LossConfig, args)
    paths, data_cfg, ckpt_cfg, eval_cfg = setup.paths, setup.data_cfg, setup.ckpt_cfg, setup.eval_cfg
    resume_dir, rank, world, stage = setup.resume_dir, setup.rank, setup.world, setup.stage

    def loss_fn(batch, denominators=None):  # denominators: those of the step under --loss_normalization global
        return compute_loss(engine, batch, loss_cfg, denominators)
    if stage is not None:
        loss_fn = stage.loss_fn(engine, loader.dataset, val_set, eval_cfg.batch_size, rank, world,
                                resumed=resume_dir is not None)

    ckpt = Checkpointer.from_config(engine, ckpt_cfg, rank)
    ema = from_args(EmaConfig, args).build(engine)
    ckpt.extras += [ema] if ema is not None else []  # saved in every checkpoint, restored on resume
    if ckpt_cfg.resume and resume_dir is None:
        log.info("--resume %s: no complete checkpoint in %s, starting fresh", ckpt_cfg.resume, ckpt.dir)
    state = ckpt.load(resume_dir) if resume_dir else TrainerState()
    model = engine.module
    summary = run_summary(args, paths, data_cfg, world, loader.dataset, val_set)
    meter = build_meter(args, engine, total_steps, state.step, rank, world, summary["args"])
    summary["flops_per_token"] = meter.fpt
    stop_at = min(total_steps, state.step + args.stop_after_steps) if args.stop_after_steps > 0 else total_steps
    save_best = functools.partial(save_to, engine, args.finetune, tokenizer_dir=paths.tokenizer_path, rank=rank)
    gen_eval, best = setup_quality(from_args(GenerationEvalConfig, args), model, paths, val_set, meter, rank, world,
                                   save_best, artefact_name(args.finetune))
    return Components(
        gen_eval=gen_eval, best=best, ema=ema, loss_cfg=loss_cfg, engine=engine, scheduler=scheduler, loader=loader, val_set=val_set, loss_fn=loss_fn, checkpointer=ckpt,
        state=state, meter=meter, guard=StepGuard(args.max_consecutive_skips, args.output_dir, state.history),
        preview=build_preview(rank, eval_cfg, engine, paths, val_set, meter.sinks),
        eval_cfg=eval_cfg, rank=rank, world=world,
        total_steps=total_steps, stop_at=stop_at, accum=args.gradient_accumulation_steps,
        num_epochs=args.num_epochs, log_every=args.log_every,
        global_norm=loss_cfg.normalization == "global" and stage is None,
        audio_out_id=model.config.audio_out_token_idx, fallback_lr=lr, summary=summary, stage=stage)


def run_summary(args, paths, data_cfg, world, train_set, val_set):
    """The facts of this run for metrics.json (and from there the exported model card)."""
    facts = {"world_size": world, "model_path": paths.model_path, "audio_tokenizer_path": paths.audio_tokenizer_path,
             "finetune": args.finetune, "tokenizer_path": paths.tokenizer_path,
             "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}, "data": {}}
    for split, path, ds in (("train", data_cfg.train_data, train_set), ("val", data_cfg.val_data, val_set)):
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
    from higgs_ds.engine.activation_checkpointing import ActivationCheckpointingConfig
    from higgs_ds.engine.metrics import MetricsConfig, StepMeter, default_tensorboard_dir, flops_per_token, peak_flops
    from higgs_ds.engine.sinks import build_sinks
    from higgs_ds.models.unwrap import base_higgs_model

    cfg = from_args(MetricsConfig, args)
    sinks = build_sinks(rank, default_tensorboard_dir(args.output_dir, cfg.tensorboard_dir),
                        os.path.join(args.output_dir, "metrics.jsonl"), cfg.wandb_project, run_config)
    model = engine.module
    recompute = from_args(ActivationCheckpointingConfig, args).recompute_fraction(len(base_higgs_model(model).layers))
    return StepMeter(rank, world, total_steps, start_step, fpt=flops_per_token(model, recompute),
                     peak=peak_flops(engine.bfloat16_enabled()), progress=not cfg.no_progress, sinks=sinks)


def fit(c: Components):
    """The loop: one optimizer step = `accum` micro-batches; eval, previews, checkpoints, preemption; the adapter."""
    from higgs_ds.data.loaders import start_epoch
    from higgs_ds.engine.checkpoint import TrainerState
    from higgs_ds.engine.ema import applied
    from higgs_ds.engine.preemption import Preemption
    from higgs_ds.evaluation.best import observe

    state, engine, meter, ckpt = c.state, c.engine, c.meter, c.checkpointer
    run_eval, show_eval = eval_functions(c)
    log_keys = c.stage.log_keys if c.stage else ("loss/text", "loss/audio")
    history, step, t0, preempt = state.history, state.step, time.time(), Preemption()
    for epoch in range(state.epoch, c.num_epochs):
        if step >= c.stop_at:
            break
        consumed = state.batches_in_epoch if epoch == state.epoch else 0
        start_epoch(c.loader, epoch, consumed)
        engine.train()
        for window in meter.windows(accumulation_windows(c.loader, c.accum)):
            train_step(engine, window, c.loss_fn, meter, c.global_norm, c.audio_out_id, step + 1, c.rank)
            if c.ema is not None:
                c.ema.update()
            step, consumed = step + 1, consumed + c.accum
            lr = c.scheduler.get_last_lr()[0] if c.scheduler else c.fallback_lr
            skips = c.guard.update(engine, step)  # raises NonFiniteAbort after --max_consecutive_skips in a row
            record = {**meter.finish(step, lr, engine.get_global_grad_norm(), skips), "epoch": epoch}
            history.append(record)
            if step % c.log_every == 0 or step == c.total_steps:
                log.info("step %d/%d | loss %.4f | %s | lr %.2e | %.0f tok/s | %.1fs", step, c.total_steps,
                         record["loss/total"], " | ".join(f"{k.split('/')[-1]} {record[k]:.4f}" for k in log_keys), lr,
                         record["perf/tokens_per_s"], time.time() - t0)
            evaluate_due(c, step)
            if c.preview is not None and c.preview.due(step):
                c.preview.write(step)
            stop = preempt.requested()  # SIGTERM/SIGINT on any rank: all ranks save at this step and exit
            if stop or ckpt.due(step) or (step == c.stop_at < c.total_steps and ckpt.save_every > 0):
                ckpt.save(TrainerState(step, epoch, consumed, history))
            if stop:
                log.warning("%s", preempt.message(step, ckpt.dir))
                meter.close()
                return EXIT_PREEMPTED
            if step >= c.stop_at:
                break
    with applied(c.ema):  # the final eval and artefact: the averaged weights
        val = run_eval(engine, c.val_set, c.loss_cfg, c.eval_cfg, c.rank, c.world) if c.val_set else None
        if val is not None:
            observe(c.best, step, show_eval(val, step, meter))
        save_artefact(c, history, val)
    return 0


def eval_functions(c):
    """(evaluate, report) of the run's stage: the preference eval under --stage dpo, the teacher-forced one else."""
    if c.stage is not None:
        return c.stage.evaluate, c.stage.report
    from higgs_ds.evaluation.validation import evaluate, report_eval

    return evaluate, report_eval


def evaluate_due(c, step):
    """The evaluations due at `step` (teacher-forced, generation) and --keep_best, on the averaged weights when
    --ema_decay is set."""
    from higgs_ds.engine.ema import applied
    from higgs_ds.evaluation.best import observe

    val_due = c.val_set is not None and c.eval_cfg.due(step) and step < c.stop_at
    gen_due = c.gen_eval is not None and c.gen_eval.due(step)
    if not (val_due or gen_due):
        return
    run_eval, show_eval = eval_functions(c)
    with applied(c.ema):
        if val_due:
            val = run_eval(c.engine, c.val_set, c.loss_cfg, c.eval_cfg, c.rank, c.world)
            observe(c.best, step, show_eval(val, step, c.meter))
        if gen_due:
            observe(c.best, step, c.gen_eval.run(step))


def save_artefact(c, history, val):
    """The adapter (lora, audio) or full model dir (full; ZeRO-3 partitions gathered on every rank), then rank 0's
    metrics.json; every rank waits for it."""
    from higgs_ds.engine.metrics import json_safe
    from higgs_ds.models.finetune import save_final

    out = c.checkpointer.output_dir
    artefact = save_final(c.engine, c.summary["finetune"], out, c.summary["tokenizer_path"], c.rank)
    if c.rank == 0:
        quality = {"eval_gen": c.gen_eval.records if c.gen_eval else [], "best": c.best.best if c.best else None}
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(json_safe({"history": history, "val": val, **c.summary, "artefact": artefact, **quality}), f,
                      indent=1, allow_nan=False)
    c.meter.close()
    torch.distributed.barrier()


def train_step(engine, window, loss_fn, meter, global_norm, audio_out_id, step, rank):
    """Optimizer step `step` over a window of micro-batches (DeepSpeed steps the optimizer at its boundary)."""
    from higgs_ds.data.loaders import to_device
    from higgs_ds.engine.faults import unlabel_audio
    from higgs_ds.engine.numerics import inject
    from higgs_ds.faults import fault
    from higgs_ds.loss import count_labeled, global_denominators

    window = [unlabel_audio(b, step, rank) for b in window]

    denominators = None
    if global_norm:
        denominators = global_denominators([count_labeled(b, audio_out_id) for b in window], len(window),
                                           device=engine.device)
    for batch in window:
        out = loss_fn(to_device(batch, engine.device), denominators)
        engine.backward(inject(out.loss, step, rank))
        fault("kill_mid_step", step, rank)
        engine.step()
        meter.add(out.metrics, batch)


def accumulation_windows(loader, size):
    """Group micro-batches into optimizer steps (a trailing partial window is dropped, as DeepSpeed would)."""
    it = iter(loader)
    while len(window := list(itertools.islice(it, size))) == size:
        yield window


if __name__ == "__main__":
    sys.exit(main())

"""Train a LoRA adapter for Higgs Audio v2 voice cloning with DeepSpeed.

    deepspeed --num_gpus 8 higgs_ds/train.py --deepspeed ds_configs/zero2.json --model_path ... --train_data ...
    DS_ACCELERATOR=cpu deepspeed --num_accelerators 2 higgs_ds/train.py --deepspeed ds_configs/cpu_zero2.json
    python higgs_ds/train.py --quick_test            # one process, embedded tiny default
    launch/single_node.sh ... --save_every 500 --resume auto   # restartable; see docs/FLAGS.md, launch/

Reads top to bottom: flags -> distributed -> data -> model + LoRA -> DeepSpeed engine -> resume -> loop -> adapter.
Checkpoints: engine/checkpoint.py; metrics (TensorBoard, tqdm): engine/metrics.py; activation checkpointing:
engine/activation_checkpointing.py; SIGTERM/SIGINT: engine/preemption.py; NaN/inf steps: engine/numerics.py;
output-dir checks: engine/preflight.py.
"""
import os
import sys

if __name__ == "__main__":  # run as a script: do not let higgs_ds/ itself shadow top-level modules
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import dataclasses
import itertools
import json
import logging
import time

import torch

from higgs_ds.args import default_ds_config, parse_args
from higgs_ds.engine.distributed import (all_reduce_sum, init_distributed, report_failure, select_accelerator,
                                         setup_logging)
from higgs_ds.engine.numerics import EXIT_NONFINITE, NonFiniteAbort

log = logging.getLogger("higgs_ds.train")


def main(argv=None):
    """Entry point: `train`, with a clear last message when the run aborts on NaNs or a rank dies."""
    try:
        return run(argv)
    except NonFiniteAbort as e:
        log.error("%s", e)
        return EXIT_NONFINITE
    except Exception as e:
        report_failure(e, log)
        raise


def run(argv=None):
    args = parse_args(argv)
    if args.create_sample_data:
        from higgs_ds.data.synthetic import create_sample_data

        train, val = create_sample_data(args.create_sample_data, num_samples=args.num_sample_data, seed=args.seed)
        print(f"wrote {args.num_sample_data} samples: {train} and {val}")
        return 0

    accelerator = select_accelerator()
    import deepspeed

    from higgs_ds.assets import ensure_tiny_data
    from higgs_ds.data.loaders import build_loader, load_dataset, open_code_cache, start_epoch, validate_files
    from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing
    from higgs_ds.engine.checkpoint import Checkpointer, TrainerState, find_resume_dir, needs_universal, resumable
    from higgs_ds.engine.ds_config import load_ds_config
    from higgs_ds.engine.metrics import StepMeter, default_tensorboard_dir, flops_per_token, json_safe, peak_flops
    from higgs_ds.engine.numerics import StepGuard
    from higgs_ds.engine.preemption import EXIT_PREEMPTED, Preemption
    from higgs_ds.engine.preflight import check_free_space, check_output_dir
    from higgs_ds.loss import LossConfig, compute_loss
    from higgs_ds.models.loading import ModelPaths, load_all, load_text_tokenizer, load_whisper_processor
    from higgs_ds.models.lora import apply_lora

    # --- paths first: building the embedded default (first use) must happen before torch.distributed exists,
    # because the audio tokenizer's codebook initialisation all-gathers whenever a process group is up
    train_path, val_path = args.train_data, args.val_data
    if train_path is None:
        train_path, default_val = ensure_tiny_data()
        val_path = val_path or default_val
    paths = ModelPaths.resolve(args.model_path, args.audio_tokenizer_path, args.tokenizer_path)

    rank, world = init_distributed(args.dist_timeout_minutes)
    setup_logging(rank)
    ds_path = args.deepspeed or default_ds_config(accelerator)
    ds_kwargs = dict(micro_batch_size=args.batch_size, grad_accum_steps=args.gradient_accumulation_steps,
                     world_size=world, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                     explicit=args.explicit)
    load_ds_config(ds_path, total_steps=2, warmup_steps=1, **ds_kwargs)  # fail on a bad config before loading
    resume_dir = find_resume_dir(args.resume, args.output_dir)  # and on a bad --resume PATH
    torch.manual_seed(args.seed)

    # --- data
    if args.validate_data_only:
        validate_files([p for p in (train_path, val_path) if p], load_text_tokenizer(paths.tokenizer_path), args)
        return 0
    check_output_dir(args.output_dir)  # writable, before anything loads
    if args.auto_prepare:  # issue 14: a ChatML file is prepared once into the cache (rank 0), then reused
        from higgs_ds.data.auto_prepare import auto_prepare

        train_path, val_path = (auto_prepare(p, paths.tokenizer_path, paths.audio_tokenizer_path, args, rank)
                                for p in (train_path, val_path))
    whisper = load_whisper_processor(paths.model_path, args.whisper_processor_path)  # None unless the config needs it
    from higgs_ds.data.prepared import is_prepared  # issue 14: prepared data needs no audio tokenizer

    prepared = all(is_prepared(p) for p in (train_path, val_path) if p)
    model, tokenizer, audio_tokenizer = load_all(paths, audio=not prepared)
    limit = 8 if args.quick_test else None
    data_kw = dict(show_progress=rank == 0, args=args, code_cache=open_code_cache(args, paths.audio_tokenizer_path),
                   whisper_processor=whisper, audio_tokenizer_path=paths.audio_tokenizer_path)  # issue 14: prepared dirs
    train_set = load_dataset(train_path, tokenizer, audio_tokenizer, limit, **data_kw)
    val_set = load_dataset(val_path, tokenizer, audio_tokenizer, limit, **data_kw) if val_path else None
    del audio_tokenizer
    log.info("data: %d train samples (%s), %d val samples", len(train_set), train_path, len(val_set or []))

    # --- model, engine
    model = apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_preset,
                       args.lora_target_modules, args.modules_to_save)
    recomputed = enable_activation_checkpointing(model, args.activation_checkpointing, args.checkpoint_every_k)
    recompute_fraction = len(recomputed) / model.config.text_config.num_hidden_layers
    loader = build_loader(train_set, model.config, args.batch_size, rank, world, args.seed,
                          max_tokens_per_batch=args.max_tokens_per_batch, num_workers=args.num_workers)
    steps_per_epoch = max(1, len(loader) // args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.num_epochs
    if args.max_steps > 0:
        total_steps = min(total_steps, args.max_steps)
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

    loss_cfg = LossConfig(text_loss_weight=args.text_loss_weight, audio_loss_weight=args.audio_loss_weight,
                          codebook_weights=args.codebook_weights, label_smoothing=args.label_smoothing,
                          z_loss=args.z_loss, normalization=args.loss_normalization)
    audio_out_id = model.config.audio_out_token_idx

    eval_cfg = dataclasses.replace(loss_cfg, normalization="local")  # validation reports per-batch means

    def loss_fn(batch, denominators=None):
        return compute_loss(engine, batch, loss_cfg if denominators else eval_cfg, denominators)

    # --- resume, then the loop: one optimizer step = `gradient_accumulation_steps` micro-batches
    ckpt = Checkpointer(engine, args.output_dir, args.save_every, args.keep_last, rank)
    if args.resume and resume_dir is None:
        log.info("--resume %s: no complete checkpoint in %s, starting fresh", args.resume, ckpt.dir)
    state = ckpt.load(resume_dir) if resume_dir else TrainerState()
    loader = resumable(loader)
    accum, history, step, t0 = args.gradient_accumulation_steps, state.history, state.step, time.time()
    stop_at = min(total_steps, state.step + args.stop_after_steps) if args.stop_after_steps > 0 else total_steps
    meter = StepMeter(rank, world, total_steps, step, default_tensorboard_dir(args.output_dir, args.tensorboard_dir),
                      flops_per_token(model, recompute_fraction),
                      peak_flops(engine.bfloat16_enabled()), progress=not args.no_progress)
    preview = None
    if rank == 0 and args.sample_every > 0 and val_set is not None and meter.writer is not None:
        from higgs_ds.inference.preview import AudioPreview

        preview = AudioPreview(engine.module.get_base_model(), paths, val_set.samples, args.sample_every,
                               meter.writer, args.num_preview_prompts, args.preview_max_new_tokens)
    guard = StepGuard(args.max_consecutive_skips, args.output_dir, history)
    preempt = Preemption()
    for epoch in range(state.epoch, args.num_epochs):
        if step >= stop_at:
            break
        consumed = state.batches_in_epoch if epoch == state.epoch else 0
        start_epoch(loader, epoch, consumed)
        engine.train()
        for window in meter.windows(accumulation_windows(loader, accum)):
            train_step(engine, window, loss_fn, meter, args.loss_normalization == "global", audio_out_id,
                       step + 1, rank)
            step, consumed = step + 1, consumed + accum
            lr = scheduler.get_last_lr()[0] if scheduler else opt_kwargs["lr"]
            skips = guard.update(engine, step)  # raises NonFiniteAbort after --max_consecutive_skips in a row
            record = {**meter.finish(step, lr, engine.get_global_grad_norm(), skips), "epoch": epoch}
            history.append(record)
            if step % args.log_every == 0 or step == total_steps:
                log.info("step %d/%d | loss %.4f | text %.4f | audio %.4f | lr %.2e | %.0f tok/s | %.1fs", step,
                         total_steps, record["loss/total"], record["loss/text"], record["loss/audio"], lr,
                         record["perf/tokens_per_s"], time.time() - t0)
            if val_set is not None and args.eval_every > 0 and step % args.eval_every == 0 and step < stop_at:
                report_eval(evaluate(engine, val_set, model.config, args, rank, world, loss_fn), step, meter)
            if preview is not None and preview.due(step):
                preview.write(step)
            stop = preempt.requested()  # SIGTERM/SIGINT on any rank: all ranks save at this step and exit
            if stop or ckpt.due(step) or (step == stop_at < total_steps and args.save_every > 0):
                ckpt.save(TrainerState(step, epoch, consumed, history))
            if stop:
                log.warning("%s", preempt.message(step, ckpt.dir))
                meter.close()
                return EXIT_PREEMPTED
            if step >= stop_at:
                break

    val_loss = evaluate(engine, val_set, model.config, args, rank, world, loss_fn) if val_set else None
    if val_loss is not None:
        report_eval(val_loss, step, meter)

    # --- adapter
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        engine.module.save_pretrained(os.path.join(args.output_dir, "adapter"))
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(json_safe({"history": history, "val": val_loss, "world_size": world,
                                 "model_path": paths.model_path, "audio_tokenizer_path": paths.audio_tokenizer_path,
                                 "train_data": train_path, "val_data": val_path}), f, indent=1, allow_nan=False)
        log.info("adapter written to %s", os.path.join(args.output_dir, "adapter"))
    meter.close()
    torch.distributed.barrier()
    return 0


def train_step(engine, window, loss_fn, meter, global_norm, audio_out_id, step, rank):
    """Optimizer step `step` over a window of micro-batches (DeepSpeed steps the optimizer at its boundary)."""
    from higgs_ds.data.loaders import to_device
    from higgs_ds.engine.faults import fault, unlabel_audio
    from higgs_ds.engine.numerics import inject
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


def report_eval(val, step, meter):
    meter.write(val, step, "eval/")
    log.info("validation at step %d: loss %.4f | text %.4f | audio %.4f", step, val["loss/total"], val["loss/text"],
             val["loss/audio"])


def accumulation_windows(loader, size):
    """Group micro-batches into optimizer steps (a trailing partial window is dropped, as DeepSpeed would)."""
    it = iter(loader)
    while len(window := list(itertools.islice(it, size))) == size:
        yield window


@torch.no_grad()
def evaluate(engine, dataset, config, args, rank, world, loss_fn):
    """Mean of per-batch losses and per-codebook accuracies over the validation set, averaged over ranks."""
    from higgs_ds.data.loaders import build_loader, to_device

    engine.eval()
    loader = build_loader(dataset, config, args.batch_size, rank, world, args.seed, shuffle=False,
                          num_workers=args.num_workers)
    sums = {}
    for batch in loader:
        for k, v in loss_fn(to_device(batch, engine.device)).metrics.items():
            if k.startswith(("loss/", "acc/")):
                sums[k] = sums.get(k, 0.0) + float(v)
    keys = sorted(sums)
    vec = torch.tensor([sums[k] for k in keys] + [float(len(loader))], dtype=torch.float64)
    vec = all_reduce_sum(vec)
    engine.train()
    return {k: v / max(vec[-1].item(), 1.0) for k, v in zip(keys, vec[:-1].tolist())}


if __name__ == "__main__":
    sys.exit(main())

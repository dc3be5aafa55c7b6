"""The training loop every recipe runs: `fit(trainer)`. One optimizer step = `accum` micro-batches through the
recipe's `Objective`; evaluations, previews, checkpoints and preemption at their cadence; the artefact at the end.
The loop knows no recipe: what differs between SFT and DPO is the `Objective` (loss, evaluation, log keys)."""
import dataclasses
import itertools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Callable, Optional

import torch

from ..errors import EXIT_PREEMPTED

if TYPE_CHECKING:  # the component types, for the annotations only
    from deepspeed import DeepSpeedEngine
    from torch.optim.lr_scheduler import LRScheduler
    from torch.utils.data import DataLoader, Dataset

    from ..engine.checkpoint import Checkpointer, TrainerState
    from ..engine.ema import WeightAverage
    from ..engine.metrics import StepMeter
    from ..engine.numerics import StepGuard
    from ..evaluation.best import BestKeeper
    from ..evaluation.config import EvalConfig
    from ..evaluation.in_training import GenerationEval
    from ..inference.preview import AudioPreview
    from ..loss import LossOutput

log = logging.getLogger("higgs_ds.train")


@dataclasses.dataclass
class Objective:
    """What a recipe trains on and how it is evaluated: everything recipe-specific the loop calls."""
    loss_fn: "Callable[..., LossOutput]"  # (batch, denominators=None) -> LossOutput
    evaluate: "Callable[..., dict]"  # (engine, val_set, rank, world) -> the held-out means
    report: "Callable[..., dict]"  # (val, step, meter) -> val, written to every sink and the log
    log_keys: tuple  # record keys in each logged step's line, besides the total loss
    global_norm: bool = False  # --loss_normalization global: each micro-batch normalised by the step's counts
    extras: list = dataclasses.field(default_factory=list)  # more checkpoint state: save_state / load_state


@dataclasses.dataclass
class Trainer:
    """Everything `fit` needs, built by `builders.build_trainer`."""
    engine: "DeepSpeedEngine"
    scheduler: "Optional[LRScheduler]"  # None when the DeepSpeed config has no scheduler section
    loader: "DataLoader"  # resumable (data/resume.py)
    val_set: "Optional[Dataset]"
    objective: Objective
    checkpointer: "Checkpointer"
    state: "TrainerState"
    meter: "StepMeter"
    guard: "StepGuard"
    preview: "Optional[AudioPreview]"
    gen_eval: "Optional[GenerationEval]"
    best: "Optional[BestKeeper]"  # --keep_best
    ema: "Optional[WeightAverage]"  # --ema_decay
    eval_cfg: "EvalConfig"
    rank: int
    world: int
    total_steps: int
    stop_at: int
    accum: int
    num_epochs: int
    log_every: int
    audio_out_id: int
    fallback_lr: float
    summary: dict  # facts for metrics.json


def fit(t: Trainer):
    """The loop: one optimizer step = `accum` micro-batches; eval, previews, checkpoints, preemption; the artefact."""
    step, code = run_steps(t)
    return code if code is not None else finish(t, step)


def run_steps(t: Trainer):
    """The steps from `t.state` to `t.stop_at` (a recipe may call it once per phase: DPO rounds); (step, None), or
    (step, EXIT_PREEMPTED) after a stop request was checkpointed."""
    from ..data.loaders import start_epoch
    from ..engine.checkpoint import TrainerState
    from ..engine.preemption import Preemption

    state, engine, meter, ckpt = t.state, t.engine, t.meter, t.checkpointer
    history, step, t0, preempt = state.history, state.step, time.time(), Preemption()
    for epoch in range(state.epoch, t.num_epochs):
        if step >= t.stop_at:
            break
        consumed = state.batches_in_epoch if epoch == state.epoch else 0
        start_epoch(t.loader, epoch, consumed)
        engine.train()
        for window in meter.windows(accumulation_windows(t.loader, t.accum)):
            train_step(t, window, step + 1)
            step, consumed = step + 1, consumed + t.accum
            lr = t.scheduler.get_last_lr()[0] if t.scheduler else t.fallback_lr
            skips = t.guard.update(engine, step)  # raises NonFiniteAbort after --max_consecutive_skips in a row
            record = {**meter.finish(step, lr, engine.get_global_grad_norm(), skips), "epoch": epoch}
            history.append(record)
            if step % t.log_every == 0 or step == t.total_steps:
                log.info("step %d/%d | loss %.4f | %s | lr %.2e | %.0f tok/s | %.1fs", step, t.total_steps,
                         record["loss/total"], " | ".join(f"{k.split('/')[-1]} {record[k]:.4f}"
                                                          for k in t.objective.log_keys), lr,
                         record["perf/tokens_per_s"], time.time() - t0)
            evaluate_due(t, step)
            if t.preview is not None and t.preview.due(step):
                t.preview.write(step)
            stop = preempt.requested()  # SIGTERM/SIGINT on any rank: all ranks save at this step and exit
            if stop or ckpt.due(step) or (step == t.stop_at < t.total_steps and ckpt.save_every > 0):
                ckpt.save(TrainerState(step, epoch, consumed, history))
            if stop:
                log.warning("%s", preempt.message(step, ckpt.dir))
                meter.close()
                return step, EXIT_PREEMPTED
            if step >= t.stop_at:
                break
    return step, None


def finish(t, step):
    """The final evaluation and the artefact, on the averaged weights when --ema_decay is set; 0."""
    from ..engine.ema import applied
    from ..evaluation.best import observe

    with applied(t.ema):
        val = t.objective.evaluate(t.engine, t.val_set, t.rank, t.world) if t.val_set else None
        if val is not None:
            observe(t.best, step, t.objective.report(val, step, t.meter))
        save_artefact(t, t.state.history, val)
    return 0


def evaluate_due(t, step):
    """The evaluations due at `step` (the objective's, generation) and --keep_best, on the averaged weights when
    --ema_decay is set."""
    from ..engine.ema import applied
    from ..evaluation.best import observe

    val_due = t.val_set is not None and t.eval_cfg.due(step) and step < t.stop_at
    gen_due = t.gen_eval is not None and t.gen_eval.due(step)
    if not (val_due or gen_due):
        return
    with applied(t.ema):
        if val_due:
            val = t.objective.evaluate(t.engine, t.val_set, t.rank, t.world)
            observe(t.best, step, t.objective.report(val, step, t.meter))
        if gen_due:
            observe(t.best, step, t.gen_eval.run(step))


def save_artefact(t, history, val):
    """The adapter (lora, audio) or full model dir (full; ZeRO-3 partitions gathered on every rank), then rank 0's
    metrics.json; every rank waits for it."""
    from ..engine.metrics import json_safe
    from ..models.finetune import save_final

    out = t.checkpointer.output_dir
    artefact = save_final(t.engine, t.summary["finetune"], out, t.summary["tokenizer_path"], t.rank)
    if t.rank == 0:
        quality = {"eval_gen": t.gen_eval.records if t.gen_eval else [], "best": t.best.best if t.best else None}
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(json_safe({"history": history, "val": val, **t.summary, "artefact": artefact, **quality}), f,
                      indent=1, allow_nan=False)
    t.meter.close()
    torch.distributed.barrier()


def train_step(t, window, step):
    """Optimizer step `step` over a window of micro-batches (DeepSpeed steps the optimizer at its boundary)."""
    from ..data.loaders import to_device
    from ..engine.faults import unlabel_audio
    from ..engine.numerics import inject
    from ..faults import fault
    from ..loss import count_labeled, global_denominators

    engine, rank = t.engine, t.rank
    window = [unlabel_audio(b, step, rank) for b in window]
    denominators = None
    if t.objective.global_norm:
        denominators = global_denominators([count_labeled(b, t.audio_out_id) for b in window], len(window),
                                           device=engine.device)
    for batch in window:
        out = t.objective.loss_fn(to_device(batch, engine.device), denominators)
        engine.backward(inject(out.loss, step, rank))
        fault("kill_mid_step", step, rank)
        engine.step()
        t.meter.add(out.metrics, batch)
    if t.ema is not None:
        t.ema.update()


def accumulation_windows(loader, size):
    """Group micro-batches into optimizer steps (a trailing partial window is dropped, as DeepSpeed would)."""
    it = iter(loader)
    while len(window := list(itertools.islice(it, size))) == size:
        yield window

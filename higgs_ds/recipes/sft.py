"""Supervised fine-tuning for voice cloning (`train.py`, `--stage sft`): LoRA, audio-path or full fine-tuning on
voice-cloning samples with the fused multi-codebook loss (docs/LOSS.md), evaluated teacher-forced."""
from ..config import from_args
from .builders import build_data_and_model, build_engine, build_loader, build_trainer, setup_run
from .loop import Objective, fit


def run(args):
    """Build the run and train it; the exit code."""
    trainer = build(args)
    return 0 if trainer is None else fit(trainer)


def build(args):
    """The `Trainer` of an SFT run; None after --validate_data_only."""
    from ..loss import LossConfig

    setup = setup_run(args)  # inputs checked, process group, DeepSpeed config, resume point
    if setup is None:
        return None
    model, train_set, val_set = build_data_and_model(args, setup)
    loader, total_steps = build_loader(args, setup, train_set, model.config)
    engine, scheduler, lr = build_engine(args, setup, model, total_steps)
    objective = sft_objective(engine, from_args(LossConfig, args), setup.eval_cfg.batch_size)
    return build_trainer(args, setup, engine, scheduler, lr, loader, val_set, total_steps, objective)


def sft_objective(engine, loss_cfg, eval_batch_size):
    """The fused loss of each micro-batch (normalised by the step's counts under --loss_normalization global) and
    the teacher-forced evaluation (the numbers of `higgs-ds evaluate`)."""
    from ..evaluation.teacher_forced import report, teacher_forced_eval
    from ..loss import compute_loss

    def loss_fn(batch, denominators=None):
        return compute_loss(engine, batch, loss_cfg, denominators)

    def evaluate(engine, val_set, rank, world):
        return teacher_forced_eval(engine, val_set, eval_batch_size, loss_cfg, rank, world, engine.device)

    return Objective(loss_fn, evaluate, report, log_keys=("loss/text", "loss/audio"),
                     global_norm=loss_cfg.normalization == "global")


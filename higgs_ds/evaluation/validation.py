"""Validation during training: the teacher-forced evaluation (the one `higgs-ds evaluate` runs), its report, and
the TensorBoard audio preview."""
import logging

log = logging.getLogger(__name__)


def evaluate(engine, dataset, loss_cfg, config, rank, world):
    """Token-weighted teacher-forced loss and accuracy over the validation set, summed over ranks
    (evaluation/teacher_forced.py: the same numbers as `higgs-ds evaluate`)."""
    from .teacher_forced import teacher_forced_eval

    return teacher_forced_eval(engine, dataset, config.batch_size, loss_cfg, rank, world, engine.device)


def report_eval(val, step, meter):
    """Write `val` to TensorBoard (eval/...) and the log; returns it."""
    meter.write(val, step, "eval/")
    log.info("validation at step %d: loss %.4f | text %.4f | audio %.4f", step, val["loss/total"], val["loss/text"],
             val["loss/audio"])
    return val


def build_preview(rank, config, engine, paths, val_set, sinks):
    """The audio preview on rank 0 (None when off, without validation data or without a media sink)."""
    if rank != 0 or config.sample_every <= 0 or val_set is None or not sinks:
        return None
    from ..inference.preview import AudioPreview
    from ..models.unwrap import base_higgs_model

    return AudioPreview(base_higgs_model(engine), paths, val_set.samples, config.sample_every, sinks,
                        config.num_preview_prompts, config.preview_max_new_tokens)

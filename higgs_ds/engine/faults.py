"""Fault injection at the training step's own points (`unlabel_audio`); `fault` and the `HIGGS_DS_FAULT` syntax are
in higgs_ds/faults.py (below data/, whose prepare has a kill point too).
"""
from ..constants import IGNORE_INDEX
from ..faults import fault
from ..models.training_forward import INDEX_PLAN_KEY


def unlabel_audio(batch, step, rank=0):
    """Fault `no_audio_labels`: every audio label of `batch` becomes -100 (a rank with no trainable audio)."""
    if batch.get("label_audio_ids") is None or not fault("no_audio_labels", step, rank):
        return batch
    out = {**batch, "label_audio_ids": batch["label_audio_ids"].new_full(batch["label_audio_ids"].shape, IGNORE_INDEX)}
    plan = batch.get(INDEX_PLAN_KEY)  # the host-side index plan (data/index_plan.py) holds the loss's labeled rows
    if plan is not None:
        out[INDEX_PLAN_KEY] = plan.without_audio_labels()
    return out

"""`train.py --stage dpo`: direct preference optimisation on train.py's builders (docs/PREFERENCE.md).

Everything else is SFT's: launcher, DeepSpeed config, model + adapter, engine, checkpoints and `--resume`, meter and
sinks. This stage changes four things:
- data: every sample must be a pair (`rejected` audio; validated with the other checks, file:line problems), read as
  a `PairDataset` (each clip encoded once; chosen and rejected collated into one batch). Prepared dirs hold no
  rejected clips: pair files are read as ChatML (auto-prepare off).
- reference: `adapter` = the model with its peft adapter disabled (no second copy); `stored` = the initial model's
  log-probs of every train and val pair, computed once before the first step into `output_dir/reference_logps.pt`
  and read back on resume (never recomputed from trained weights).
- loss: `loss.preference.preference_loss`; metrics `pref/*` go to every sink through the step meter.
- validation: `pref/*` means over the val pairs (`eval/pref/...`).
"""
import dataclasses
import io
import logging
import os

import torch

from ..config import from_args
from ..data.pairs import PairDataset
from ..data.prepared import is_prepared
from ..durable import write_atomic
from ..errors import ConfigError, DataError, InputNotFound
from ..evaluation.preference import preference_eval, reference_table
from ..loss.preference import PreferenceConfig, preference_loss, stored_reference

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.pt"
LOG_KEYS = ("pref/accuracy", "pref/margin", "loss/audio")


class DPOStage:
    """The hooks train.py calls under `--stage dpo`."""
    dataset_cls = PairDataset
    log_keys = LOG_KEYS

    def __init__(self, args):
        self.config = from_args(PreferenceConfig, args)
        self.finetune, self.output_dir = args.finetune, args.output_dir
        self.reference = self.config.reference
        if self.reference == "auto":
            self.reference = "adapter" if self.finetune == "lora" else "stored"
        self.tables = {}

    def data_config(self, data_cfg):
        """Pairs required in validation; ChatML files only (a prepared dir has no rejected clips)."""
        for path in (data_cfg.train_data, data_cfg.val_data):
            if path and is_prepared(path):
                raise DataError(f"{path}: --stage dpo reads preference pairs from a ChatML file; a prepared dir holds "
                                "no rejected audio", "rejected")
        validation = dataclasses.replace(data_cfg.validation, require_pairs=True)
        return dataclasses.replace(data_cfg, validation=validation, auto_prepare=False)

    def loss_fn(self, engine, train_set, val_set, batch_size, rank, world, resumed):
        """The training loss `fn(batch, denominators)`; with a stored reference, its tables first."""
        if self.reference == "stored":
            self.tables = self._stored_tables(engine, {"train": train_set, "val": val_set}, batch_size, rank, world,
                                              resumed)
        train_table = self.tables.get("train")

        def loss_fn(batch, denominators=None):  # denominators: SFT's global normalisation, unused by DPO
            ref = stored_reference(train_table, batch) if train_table is not None else None
            return preference_loss(engine, batch, self.config, ref)
        return loss_fn

    def _stored_tables(self, engine, sets, batch_size, rank, world, resumed):
        path = os.path.join(self.output_dir, REFERENCE_FILE)
        if os.path.isfile(path):
            tables = torch.load(path)
            log.info("reference log-probs read from %s", path)
        elif resumed:
            raise InputNotFound(f"{path} is missing: a resumed DPO run needs the reference log-probs stored at its "
                                "start (they cannot be recomputed from trained weights)")
        else:
            tables = {k: reference_table(engine, ds, batch_size, rank, world, self.config.chunk_size)
                      for k, ds in sets.items() if ds is not None}
            if rank == 0:
                buf = io.BytesIO()
                torch.save(tables, buf)
                write_atomic(path, buf.getvalue())
                log.info("reference log-probs of %s written to %s", ", ".join(tables), path)
            torch.distributed.barrier()
        for k, ds in sets.items():
            if ds is not None and (k not in tables or tuple(tables[k].shape) != (len(ds), 2)):
                held = tables[k].shape[0] if k in tables else 0
                raise ConfigError(f"{path} holds {held} {k} pairs, the data {len(ds)}: another run's reference "
                                  "log-probs (use a fresh --output_dir)")
        return {k: t.to(engine.device) for k, t in tables.items()}  # looked up on the device: no host sync

    def evaluate(self, engine, val_set, loss_cfg, eval_cfg, rank, world):
        """`pref/*` means over the val pairs (train.py's `evaluate` signature)."""
        return preference_eval(engine, val_set, eval_cfg.batch_size, self.config, self.tables.get("val"), rank, world)

    def report(self, val, step, meter):
        """Write `val` to every sink (eval/...) and the log; returns it."""
        meter.write(val, step, "eval/")
        log.info("validation at step %d: pref loss %.4f | accuracy %.3f | margin %.4f | chosen logp %.2f | rejected "
                 "logp %.2f", step, val["pref/loss"], val["pref/accuracy"], val["pref/margin"],
                 val["pref/logp_chosen"], val["pref/logp_rejected"])
        return val


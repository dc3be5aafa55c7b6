"""Direct preference optimisation (`train.py --stage dpo`, docs/PREFERENCE.md), on the builders SFT uses.

Launcher, DeepSpeed config, model + adapter, engine, checkpoints and `--resume`, meter and sinks are SFT's. What
differs, in the order `build` reads:
- data: every sample must be a pair (`rejected` audio; validated with the other checks, file:line problems),
  prepared like any data (the rejected clip's codes stored beside the chosen ones, each clip encoded once) and read
  as a `PairDataset` over the prepared set (chosen and rejected collated into one batch).
- reference: `adapter` = the model with its peft adapter disabled (no second copy); `stored` = the initial model's
  log-probs of every train and val pair, computed once before the first step into `output_dir/reference_logps.pt`
  and read back on resume (never recomputed from trained weights).
- objective: `loss.preference.preference_loss`; `pref/*` metrics to every sink through the step meter; the
  held-out evaluation is `pref/*` means over the val pairs (`eval/pref/...`).
"""
import io
import logging
import os

import torch

from ..durable import write_atomic
from ..errors import ConfigError, InputNotFound
from .builders import build_data_and_model, build_engine, build_loader, build_trainer, setup_run
from .loop import Objective, fit

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.pt"
LOG_KEYS = ("pref/accuracy", "pref/margin", "loss/audio")


def run(args):
    """Build the run and train it; the exit code."""
    trainer = build(args)
    return 0 if trainer is None else fit(trainer)


def build(args):
    """The `Trainer` of a DPO run; None after --validate_data_only."""
    from ..data.pairs import PairDataset

    setup = setup_run(args, pair_data=True)  # inputs checked (pairs required), process group, DeepSpeed config
    if setup is None:
        return None
    config = setup.cfg.preference
    model, train_set, val_set = build_data_and_model(setup, dataset_cls=PairDataset)
    loader, total_steps = build_loader(setup, train_set, model.config)
    engine, scheduler, lr = build_engine(setup, model, total_steps)
    tables = {}
    if reference_kind(config, setup.cfg.finetune.finetune) == "stored":
        tables = stored_tables(engine, {"train": train_set, "val": val_set}, setup, config.chunk_size)
    objective = dpo_objective(engine, config, tables, setup.cfg.eval.batch_size)
    return build_trainer(setup, engine, scheduler, lr, loader, val_set, total_steps, objective)


def reference_kind(config, finetune):
    """`adapter` or `stored` (`auto`: the adapter-disabled model under LoRA and audio, stored log-probs under full)."""
    if config.reference != "auto":
        return config.reference
    return "adapter" if finetune == "lora" else "stored"


def dpo_objective(engine, config, tables, eval_batch_size):
    """The preference loss of each micro-batch of pairs (against the stored reference when `tables` has one) and
    the preference evaluation of the val pairs."""
    from ..evaluation.preference import preference_eval
    from ..loss.preference import preference_loss, stored_reference

    train_table = tables.get("train")

    def loss_fn(batch, denominators=None):  # denominators: SFT's global normalisation, unused by DPO
        ref = stored_reference(train_table, batch) if train_table is not None else None
        return preference_loss(engine, batch, config, ref)

    def evaluate(engine, val_set, rank, world):
        return preference_eval(engine, val_set, eval_batch_size, config, tables.get("val"), rank, world)

    return Objective(loss_fn, evaluate, report, log_keys=LOG_KEYS)


def stored_tables(engine, sets, setup, chunk_size):
    """{split: (pairs, 2) reference log-probs}: read from output_dir/reference_logps.pt, or computed by the initial
    model before the first step and written there (rank 0); a resumed run must find them."""
    from ..evaluation.preference import reference_table

    path = os.path.join(setup.cfg.checkpoints.output_dir, REFERENCE_FILE)
    if os.path.isfile(path):
        tables = torch.load(path)
        log.info("reference log-probs read from %s", path)
    elif setup.resume_dir is not None:
        raise InputNotFound(f"{path} is missing: a resumed DPO run needs the reference log-probs stored at its "
                            "start (they cannot be recomputed from trained weights)")
    else:
        tables = {k: reference_table(engine, ds, setup.cfg.eval.batch_size, setup.rank, setup.world, chunk_size)
                  for k, ds in sets.items() if ds is not None}
        if setup.rank == 0:
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


def report(val, step, meter):
    """Write `val` to every sink (eval/...) and the log; returns it."""
    meter.write(val, step, "eval/")
    log.info("eval at step %d: pref loss %.4f | accuracy %.3f | margin %.4f | chosen logp %.2f | rejected logp %.2f",
             step, val["pref/loss"], val["pref/accuracy"], val["pref/margin"], val["pref/logp_chosen"],
             val["pref/logp_rejected"])
    return val

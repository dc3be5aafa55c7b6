"""Periodic checkpoints and exact mid-epoch resume.

Layout: `<output_dir>/checkpoints/step<N>/` holds DeepSpeed's engine state (trainable weights, optimizer,
LR scheduler; frozen base weights are excluded), `adapter/` (peft `save_pretrained`), `rng_rank<r>.json` per
rank and, written last and atomically by rank 0, `trainer_state.json` (step, epoch, micro-batches consumed in
that epoch, metric history). A tag without `trainer_state.json` is incomplete and never resumed from.
Resuming skips the consumed micro-batches at the sampler (DistributedSampler + set_epoch is deterministic),
so the data order, and with it every later loss, matches an uninterrupted run.
"""
import base64
import dataclasses
import json
import logging
import os
import random
import re
import shutil

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
_TAG = re.compile(r"^step(\d+)$")


@dataclasses.dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per rank)
    history: list = dataclasses.field(default_factory=list)


# --- RNG states as JSON
def _b64(t):
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s):
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state():
    np_state = np.random.get_state()
    state = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                            for x in np_state[2:]]],
             "torch": _b64(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# --- finding checkpoints
def complete_tags(ckpt_dir):
    """[(step, tag_dir)] of the complete checkpoints in `ckpt_dir`, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = [(int(m.group(1)), os.path.join(ckpt_dir, name)) for name in os.listdir(ckpt_dir)
             if (m := _TAG.match(name)) and os.path.isfile(os.path.join(ckpt_dir, name, STATE_FILE))]
    return sorted(found)


def find_resume_dir(resume, output_dir):
    """Tag dir to resume from: `auto` = latest complete one under output_dir (None if there is none); a PATH may
    be a tag dir, a `checkpoints/` dir or an output dir."""
    if not resume:
        return None
    if resume == "auto":
        tags = complete_tags(os.path.join(output_dir, "checkpoints"))
        return tags[-1][1] if tags else None
    if os.path.isfile(os.path.join(resume, STATE_FILE)):
        return resume
    tags = complete_tags(resume) or complete_tags(os.path.join(resume, "checkpoints"))
    if not tags:
        raise FileNotFoundError(f"--resume {resume}: no complete checkpoint (a step<N>/ dir with {STATE_FILE})")
    return tags[-1][1]


class Checkpointer:
    """Saves every `save_every` optimizer steps into `<output_dir>/checkpoints`, keeping the last `keep_last`."""

    def __init__(self, engine, output_dir, save_every=0, keep_last=0, rank=0):
        self.engine, self.save_every, self.keep_last, self.rank = engine, save_every, keep_last, rank
        self.dir = os.path.join(output_dir, "checkpoints")

    def due(self, step):
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, state):
        tag = f"step{state.step}"
        tag_dir = os.path.join(self.dir, tag)
        if self.rank == 0 and os.path.isdir(tag_dir):  # a leftover incomplete (or stale) save of this step
            shutil.rmtree(tag_dir)
        dist.barrier()
        self.engine.save_checkpoint(self.dir, tag=tag, exclude_frozen_parameters=True)
        _write_json(os.path.join(tag_dir, f"rng_rank{self.rank}.json"), rng_state())
        if self.rank == 0:
            self.engine.module.save_pretrained(os.path.join(tag_dir, "adapter"))
        dist.barrier()  # every rank's part is on disk before the state file marks the tag complete
        if self.rank == 0:
            _write_json(os.path.join(tag_dir, STATE_FILE), dataclasses.asdict(state))
            self._prune()
            log.info("checkpoint %s written", tag_dir)
        dist.barrier()

    def load(self, tag_dir):
        """Load engine + RNG state from `tag_dir`; returns the `TrainerState`."""
        with open(os.path.join(tag_dir, STATE_FILE)) as f:
            state = TrainerState(**json.load(f))
        load_dir, tag = os.path.split(os.path.normpath(tag_dir))
        path, _ = self.engine.load_checkpoint(load_dir, tag=tag, load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {tag_dir}")
        rng_file = os.path.join(tag_dir, f"rng_rank{self.rank}.json")
        if os.path.isfile(rng_file):
            with open(rng_file) as f:
                set_rng_state(json.load(f))
        log.info("resumed from %s: step %d, epoch %d, %d micro-batches into the epoch", tag_dir, state.step,
                 state.epoch, state.batches_in_epoch)
        return state

    def _prune(self):
        if self.keep_last > 0:
            for _, old in complete_tags(self.dir)[:-self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SkipSampler(Sampler):
    """Wraps a (Distributed)Sampler; the next `__iter__` drops its first `skip` indices, later ones drop none."""

    def __init__(self, sampler):
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(list(self.sampler)[skip:])

    def __len__(self):
        return len(self.sampler)


def resumable(loader):
    """The same DataLoader with a `SkipSampler` (set `loader.sampler.skip` in samples before an epoch).

    A loader driven by a batch sampler (token budget) resumes through that sampler's state: returned as is.
    """
    if loader.batch_size is None:
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=SkipSampler(loader.sampler),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, persistent_workers=loader.persistent_workers,
                      prefetch_factor=loader.prefetch_factor, worker_init_fn=loader.worker_init_fn)

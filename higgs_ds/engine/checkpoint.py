"""Atomic periodic checkpoints and exact mid-epoch resume (docs/CHECKPOINTS.md).

Layout of `<output_dir>/checkpoints/`: `step<N>/` holds DeepSpeed's engine state (trainable weights, optimizer,
LR scheduler; frozen base weights are excluded), `adapter/` (peft `save_pretrained`), `rng_rank<r>.json` per
rank and `trainer_state.json` (step, epoch, micro-batches consumed in that epoch, world size, metric history and
the size and CRC-32 of every file of the tag). `latest` names the newest published tag (DeepSpeed's own pointer
format, so `zero_to_fp32.py` reads it too).

A save writes everything into `step<N>.tmp/`, fsyncs it, and only when every rank's part is on disk does rank 0
write `trainer_state.json`, rename the dir to `step<N>/` and then move `latest` (written to a temp file,
fsynced, renamed): a kill at any point leaves the previous checkpoint valid and `latest` on it. A tag is
complete when its `trainer_state.json` exists and every file it lists has the listed size, and intact when every
file's CRC-32 is still the one computed at save time (the ranks split the files, at save and at resume): resuming
takes the tag `latest` names if it is intact, else the newest intact one, and logs each tag passed over and why.
`.tmp` leftovers are removed at the next save or resume. Resuming skips the consumed micro-batches at the sampler,
so the data order, and with it every later loss, matches an uninterrupted run. A different world size resumes
through DeepSpeed's universal checkpoint (engine/universal.py).
"""
import base64
import dataclasses
import json
import logging
import os
import random
import re
import shutil
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from ..checksums import crc32_of_files
from ..config import option
from ..constants import OUTPUT_DIR
from ..durable import TMP, fsync_path, fsync_tree, write_atomic
from ..errors import DamagedFile, InputNotFound
from ..faults import fault

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
LATEST = "latest"
_TAG = re.compile(r"^step(\d+)$")


@dataclasses.dataclass
class CheckpointConfig:
    """Resumable checkpoints under output_dir/checkpoints (docs/CHECKPOINTS.md)."""
    save_every: int = option(0, "save a resumable checkpoint to output_dir/checkpoints/step<N> every N optimizer "
                                "steps (0: never)", minimum=0)
    keep_last: int = option(3, "keep only the newest K complete checkpoints (0: keep all)", minimum=0)
    resume: Optional[str] = option(None, "auto: continue from the checkpoint output_dir/checkpoints/latest names, "
                                         "else the newest complete one (fresh start if none); PATH: a step<N> dir, a "
                                         "checkpoints/ dir or an output dir. Another number of ranks resumes through "
                                         "DeepSpeed's universal checkpoint (docs/CHECKPOINTS.md)",
                                   type=str, metavar="auto|PATH")
    output_dir: str = OUTPUT_DIR


@dataclasses.dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per rank)
    history: list = dataclasses.field(default_factory=list)
    world_size: int = 0  # ranks that wrote the checkpoint (0: not recorded)
    micro_batch_size: int = 0


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


# --- durable writes
def _write_json(path, obj):
    write_atomic(path, json.dumps(obj))


def _manifest(root):
    """{relative path: size} of every file under `root`."""
    return {os.path.relpath(os.path.join(d, n), root): os.path.getsize(os.path.join(d, n))
            for d, _, files in os.walk(root) for n in files}


# --- finding checkpoints
def read_state(tag_dir):
    """The tag's trainer_state.json as a dict, or None when the tag is incomplete (missing, unreadable, or a listed
    file missing or of another size: truncated)."""
    try:
        with open(os.path.join(tag_dir, STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    for rel, size in state.get("files", {}).items():  # checkpoints from before the manifest have no "files"
        path = os.path.join(tag_dir, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return None
    return state


def complete_tags(ckpt_dir):
    """[(step, tag_dir)] of the complete checkpoints in `ckpt_dir`, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = [(int(m.group(1)), os.path.join(ckpt_dir, name)) for name in os.listdir(ckpt_dir)
             if (m := _TAG.match(name)) and read_state(os.path.join(ckpt_dir, name)) is not None]
    return sorted(found)


def damaged_file(tag_dir, state):
    """The first file of the tag whose CRC-32 is not the one computed at save time; None when every file matches
    (tags from before checksums have none to compare). Under a process group every rank must call it."""
    expected = state.get("crc32") or {}
    got = crc32_of_files(tag_dir, expected) if expected else {}
    return next((rel for rel in sorted(expected) if got[rel] != expected[rel]), None)


def latest_tag(ckpt_dir):
    """The tag dir `latest` names if it is intact, else the newest intact tag (None if there is none); the tags
    passed over are logged with the reason."""
    try:
        with open(os.path.join(ckpt_dir, LATEST)) as f:
            name = f.read().strip()
    except OSError:
        name = None
    tags = [tag for _, tag in reversed(complete_tags(ckpt_dir))]
    named, why = os.path.join(ckpt_dir, name) if name else None, []
    if named in tags:
        tags.insert(0, tags.pop(tags.index(named)))
    elif name and tags:
        why.append(f"{ckpt_dir}/{LATEST} names {name!r}, which is not a complete checkpoint")
    for tag in tags:
        bad = damaged_file(tag, read_state(tag))
        if bad is None:
            if why:
                log.warning("%s: resuming from %s", "; ".join(why), tag)
            return tag
        why.append(f"{tag}/{bad} does not match the CRC-32 written at save time (damaged since)")
    if why:
        log.warning("%s: no intact checkpoint left", "; ".join(why))
    return None


def find_resume_dir(resume, output_dir):
    """Tag dir to resume from: `auto` = the latest complete one under output_dir (None if there is none); a PATH
    may be a tag dir, a `checkpoints/` dir or an output dir."""
    if not resume:
        return None
    if resume == "auto":
        return latest_tag(os.path.join(output_dir, "checkpoints"))
    if os.path.isfile(os.path.join(resume, STATE_FILE)):
        state = read_state(resume)
        if state is None:
            raise InputNotFound(f"--resume {resume}: incomplete or truncated checkpoint (a file that "
                                    f"{STATE_FILE} lists is missing or has another size)")
        bad = damaged_file(resume, state)
        if bad:
            raise DamagedFile(f"{os.path.join(resume, bad)}: does not match the CRC-32 written at save time "
                              "(damaged since): resume from another step<N> dir, or --resume auto (the newest "
                              "intact checkpoint)")
        return resume
    found = latest_tag(resume) or latest_tag(os.path.join(resume, "checkpoints"))
    if found is None:
        raise InputNotFound(f"--resume {resume}: no complete checkpoint (a step<N>/ dir with {STATE_FILE})")
    return found


def needs_universal(tag_dir, world_size):
    """True when `tag_dir` was written by another number of ranks (resume through the universal format)."""
    saved = (read_state(tag_dir) or {}).get("world_size", 0) if tag_dir else 0
    return bool(saved) and saved != world_size


def _adapter_copy_possible(engine):
    """A peft adapter copy of the weights fits in a checkpoint: LoRA / `--finetune audio` (not `full`, whose weights
    are the DeepSpeed checkpoint itself), and not under ZeRO-3 (partitioned: the final save gathers them instead)."""
    return hasattr(engine.module, "peft_config") and engine.zero_optimization_stage() != 3


class Checkpointer:
    """Saves every `save_every` optimizer steps into `<output_dir>/checkpoints`, keeping the last `keep_last`."""

    def __init__(self, engine, output_dir, save_every=0, keep_last=0, rank=0):
        """`Checkpointer.from_config(engine, CheckpointConfig, rank)` in training."""
        self.engine, self.save_every, self.keep_last, self.rank = engine, save_every, keep_last, rank
        self.output_dir = output_dir
        self.dir = os.path.join(output_dir, "checkpoints")
        self.extras = []  # more state saved in every tag: objects with save_state(tag_dir, rank), load_state(tag_dir)
        if engine is not None:  # lets ds_to_universal convert our tags without --inject_missing_state
            from .universal import mark_convertible

            mark_convertible(engine.module)
        if rank == 0:
            self.remove_leftovers()

    @classmethod
    def from_config(cls, engine, config, rank):
        return cls(engine, config.output_dir, config.save_every, config.keep_last, rank)

    def due(self, step):
        return self.save_every > 0 and step % self.save_every == 0

    def remove_leftovers(self):
        """Delete the `.tmp` dirs and files a killed save or prune left behind (rank 0)."""
        if os.path.isdir(self.dir):
            for name in os.listdir(self.dir):
                if name.endswith(TMP):
                    path = os.path.join(self.dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def save(self, state):
        tag = f"step{state.step}"
        tmp, final = os.path.join(self.dir, tag + TMP), os.path.join(self.dir, tag)
        state = dataclasses.replace(state, world_size=dist.get_world_size(),
                                    micro_batch_size=self.engine.train_micro_batch_size_per_gpu())
        if self.rank == 0:
            self.remove_leftovers()
        dist.barrier()
        # DeepSpeed's own `latest` would point at the tag before it is complete: we move it ourselves, last
        self.engine.save_checkpoint(self.dir, tag=tag + TMP, exclude_frozen_parameters=True, save_latest=False)
        fault("kill_mid_checkpoint", state.step, self.rank)
        _write_json(os.path.join(tmp, f"rng_rank{self.rank}.json"), rng_state())
        for extra in self.extras:
            extra.save_state(tmp, self.rank)
        if self.rank == 0 and _adapter_copy_possible(self.engine):
            self.engine.module.save_pretrained(os.path.join(tmp, "adapter"))
        fsync_tree(tmp)
        dist.barrier()  # every rank's part is on disk
        files = _manifest(tmp)
        sums = crc32_of_files(tmp, files)  # each rank reads a share of the files; all get every checksum
        if self.rank == 0:
            _write_json(os.path.join(tmp, STATE_FILE), {**dataclasses.asdict(state), "files": files, "crc32": sums})
            self._publish(tmp, final)
            fault("kill_before_latest", state.step, self.rank)
            write_atomic(os.path.join(self.dir, LATEST), tag)
            self._prune(state.step)
            log.info("checkpoint %s written", final)
        dist.barrier()

    def _publish(self, tmp, final):
        if os.path.exists(final):  # same step saved before (e.g. resumed from an older tag): set it aside first
            os.rename(final, f"{final}.old{TMP}")
        os.rename(tmp, final)
        fsync_path(self.dir)
        shutil.rmtree(f"{final}.old{TMP}", ignore_errors=True)

    def load(self, tag_dir):
        """Load engine + RNG state from `tag_dir`; returns the `TrainerState` (its data position converted to this
        world size)."""
        saved = read_state(tag_dir)
        for key in ("files", "crc32"):  # the tag's manifest, not trainer state
            saved.pop(key, None)
        state = TrainerState(**saved)
        world = dist.get_world_size()
        load_dir, tag = os.path.split(os.path.normpath(tag_dir))
        if self.engine.load_universal_checkpoint():
            from .universal import convert

            load_dir, tag = tag_dir, convert(tag_dir, self.rank)
        elif state.world_size and state.world_size != world:
            raise RuntimeError(f"{tag_dir} was written by {state.world_size} ranks, this run has {world}: load it "
                               "with \"checkpoint\": {\"load_universal\": true} in the DeepSpeed config")
        path, _ = self.engine.load_checkpoint(load_dir, tag=tag, load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {tag_dir}")
        rng_file = os.path.join(tag_dir, f"rng_rank{self.rank}.json")
        if os.path.isfile(rng_file):
            with open(rng_file) as f:
                set_rng_state(json.load(f))
        for extra in self.extras:
            extra.load_state(tag_dir)
        if state.world_size and state.world_size != world:
            from .universal import rescale_position

            state = rescale_position(state, world, self.engine.train_micro_batch_size_per_gpu())
        log.info("resumed from %s: step %d, epoch %d, %d micro-batches into the epoch", tag_dir, state.step,
                 state.epoch, state.batches_in_epoch)
        return state

    def _prune(self, step=None):
        """Delete all but the newest `keep_last` complete tags up to `step` (newer ones, from a run that was
        resumed from an older tag, are left alone). Renamed to `.tmp` first: a killed prune leaves no half tag."""
        if self.keep_last > 0:
            tags = [t for s, t in complete_tags(self.dir) if step is None or s <= step]
            for old in tags[:-self.keep_last]:
                os.rename(old, old + TMP)
                shutil.rmtree(old + TMP, ignore_errors=True)

"""Resume on a different number of ranks through DeepSpeed's universal checkpoint format.

ZeRO-2 optimizer state is sharded per rank, so a tag written by N ranks cannot be loaded by M != N ranks
directly. `convert` runs DeepSpeed's own converter (`deepspeed.checkpoint.ds_to_universal`, in-process, by rank
0, once) into `step<K>/universal/` (written as `universal.tmp/`, renamed when done): one file per parameter for
the fp32 weight and each Adam moment, which the engine reslices for any world size when the DeepSpeed config has
`"checkpoint": {"load_universal": true}` (train.py sets it when the world size changed).

Data position: the number of samples consumed in the epoch is kept, and the new world's order applies from there
(`rescale_position`). With fixed-size batches and the same global batch (scale --gradient_accumulation_steps), the
samples of every later step are exactly those of the old world: DistributedSampler gives optimizer step k the
contiguous block [k*G, (k+1)*G) of one permutation (seed + epoch) whatever the number of ranks.
"""
import logging
import os
import shutil
from argparse import Namespace

import torch.distributed as dist

log = logging.getLogger(__name__)
UNIVERSAL = "universal"


def mark_convertible(module):
    """DeepSpeed writes `universal_checkpoint_info` into each tag from this module attribute; ds_to_universal
    refuses a tag without it."""
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    if getattr(module, UNIVERSAL_CHECKPOINT_INFO, None) is None:
        setattr(module, UNIVERSAL_CHECKPOINT_INFO, {UNIVERSAL_CHECKPOINT_VERSION_KEY:
                                                    UNIVERSAL_CHECKPOINT_VERSION_VALUE})


def convert(tag_dir, rank):
    """Make `<tag_dir>/universal/` (rank 0 converts unless it exists; every rank waits); returns its name."""
    out = os.path.join(tag_dir, UNIVERSAL)
    if rank == 0 and not os.path.isfile(os.path.join(out, "zero", "optimizer_state.pt")):
        from deepspeed.checkpoint import ds_to_universal

        from ..durable import TMP, fsync_path, fsync_tree

        tmp = out + TMP
        shutil.rmtree(tmp, ignore_errors=True)  # a conversion killed half way
        log.info("converting %s to DeepSpeed's universal format (another world size)", tag_dir)
        ds_to_universal.main(Namespace(input_folder=tag_dir, output_folder=tmp, num_extract_workers=1,
                                       num_merge_workers=1, keep_temp_folder=False, strict=True,
                                       inject_missing_state=True))
        latest = os.path.join(tag_dir, "latest_universal")  # the converter's pointer (to the .tmp name): unused
        if os.path.exists(latest):
            os.remove(latest)
        fsync_tree(tmp)
        os.rename(tmp, out)
        fsync_path(tag_dir)
    dist.barrier()
    return UNIVERSAL


def rescale_position(state, world, micro_batch_size):
    """The same number of samples consumed in the epoch, in micro-batches per rank of this world."""
    import dataclasses

    samples = state.batches_in_epoch * state.world_size * (state.micro_batch_size or micro_batch_size)
    per_step = world * micro_batch_size
    batches = samples // per_step
    if samples % per_step:
        log.warning("%d samples consumed in epoch %d is not a multiple of %d ranks x micro batch %d: %d sample(s) "
                    "will be seen again", samples, state.epoch, world, micro_batch_size, samples % per_step)
    log.info("world size %d -> %d: %d samples into epoch %d = %d micro-batches per rank", state.world_size, world,
             samples, state.epoch, batches)
    return dataclasses.replace(state, batches_in_epoch=batches, world_size=world, micro_batch_size=micro_batch_size)

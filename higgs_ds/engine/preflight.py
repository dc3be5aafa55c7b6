"""Checks of the output directory before training: writable, and room for the checkpoints and the adapter."""
import os
import shutil
import uuid

from ..errors import OutputDirError

# bytes per trainable parameter: a ZeRO checkpoint holds the module's trainable weights (fp32), the fp32 master
# copy and Adam's two moments (4 + 4 + 8), the adapter copy inside it and the final adapter 4 more each
CHECKPOINT_BYTES_PER_PARAM = 20
ADAPTER_BYTES_PER_PARAM = 4
MARGIN = 1.2


def check_output_dir(path):
    """Create `path` if needed and prove it is writable (raises `OutputDirError` naming it)."""
    probe = os.path.join(path, f".write_test_{uuid.uuid4().hex}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f"--output_dir {path} is not writable: {e.strerror or e}") from None


def estimate_bytes(n_trainable, save_every, keep_last):
    """Upper estimate of what a run writes: the checkpoints that coexist (keep_last + the one being written; one
    on preemption even with --save_every 0) and the final adapter."""
    checkpoints = (keep_last + 1 if keep_last > 0 else 2) if save_every > 0 else 1
    return int(MARGIN * n_trainable * (checkpoints * (CHECKPOINT_BYTES_PER_PARAM + ADAPTER_BYTES_PER_PARAM)
                                       + ADAPTER_BYTES_PER_PARAM))


def check_free_space(path, n_trainable, save_every, keep_last):
    """Raise `OutputDirError` when the free space under `path` is below `estimate_bytes`."""
    need = estimate_bytes(n_trainable, save_every, keep_last)
    free = shutil.disk_usage(path).free
    if free < need:
        raise OutputDirError(f"--output_dir {path}: {free / 2**20:.1f} MiB free, this run needs about "
                             f"{need / 2**20:.1f} MiB ({n_trainable:,} trainable parameters, --save_every "
                             f"{save_every}, --keep_last {keep_last}); free space or choose another dir")

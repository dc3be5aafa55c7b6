"""Logging setup of every entry point, in one place: plain for the CLI tools, rank-prefixed for training."""
import logging
import sys

NOISY = ("DeepSpeed", "deepspeed", "torch.distributed")


def setup_logging(rank=None):
    """CLI tools (rank None): INFO, `LEVEL name: message`. Training: rank-prefixed with time, INFO on rank 0 and
    WARNING elsewhere, on stdout. Idempotent (replaces earlier handlers); quiets DeepSpeed's own INFO lines."""
    if rank is None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    else:
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout, force=True,
                            format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)

"""Process-group setup that works under the deepspeed launcher, torchrun, and a plain `python` process."""
import logging
import os
import socket
import sys


def select_accelerator():
    """Use DeepSpeed's CPU accelerator when there is no CUDA device (must run before `import deepspeed`)."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    return os.environ.get("DS_ACCELERATOR", "cuda")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_minutes=30):
    """Initialise torch.distributed via DeepSpeed (gloo on CPU, NCCL on GPU). Returns (rank, world_size)."""
    if "RANK" not in os.environ:  # a plain single process
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import datetime

    import deepspeed

    backend = "gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else "nccl"
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def setup_logging(rank):
    """Rank-prefixed logging; INFO on rank 0, WARNING elsewhere."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout, force=True,
        format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def all_reduce_sum(vec):
    """Sum a CPU tensor over all ranks, on the device the backend needs (NCCL: the current GPU); returns CPU."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return vec
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else vec.device
    out = vec.to(device)
    dist.all_reduce(out)
    return out.cpu()

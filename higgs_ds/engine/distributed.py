"""Process-group setup that works under the deepspeed launcher, torchrun, and a plain `python` process."""
import os
import socket


def select_accelerator():
    """Use DeepSpeed's CPU accelerator when there is no CUDA device (must run before `import deepspeed`)."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    return os.environ.get("DS_ACCELERATOR", "cuda")


def share_host_threads():
    """Split this host's cores between its ranks (torch threads), unless OMP_NUM_THREADS says otherwise: two CPU
    ranks with a thread per core each oversubscribe the host, and torch's spinning threads then run many times
    slower (torchrun sets OMP_NUM_THREADS=1 for the same reason; the deepspeed launcher sets nothing). Returns the
    thread count set, or None."""
    local_size = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 1)
    if "OMP_NUM_THREADS" in os.environ or local_size <= 1:
        return None
    import torch

    threads = max(1, len(os.sched_getaffinity(0)) // local_size)
    torch.set_num_threads(threads)
    return threads


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_minutes=30):
    """Initialise torch.distributed via DeepSpeed (gloo on CPU, NCCL on GPU). Returns (rank, world_size).

    `timeout_minutes` bounds every collective (--dist_timeout_minutes): a rank stuck that long (a dead peer on
    another node, a hung filesystem) raises instead of hanging. NCCL enforces it through torch's watchdog
    (TORCH_NCCL_ASYNC_ERROR_HANDLING, on by default), gloo in the call itself."""
    if "RANK" not in os.environ:  # a plain single process
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import datetime

    import deepspeed

    backend = "gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else "nccl"
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


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


def dead_local_ranks():
    """Global ranks of this node's sibling ranks (same launcher parent) that are no longer running."""
    import psutil

    local_size = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 0)  # deepspeed / torchrun
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    alive = {local_rank}
    try:
        siblings = psutil.Process().parent().children()
    except (psutil.Error, AttributeError):
        return []
    for p in siblings:
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "LOCAL_RANK" in (env := p.environ()):
                alive.add(int(env["LOCAL_RANK"]))
        except (psutil.Error, ValueError):
            pass
    first = int(os.environ.get("RANK", 0)) - local_rank
    return [first + r for r in range(local_size) if r not in alive]


COLLECTIVE_ERRORS = ("gloo", "NCCL", "timed out", "Timed out", "Connection", "Broken pipe")


def report_failure(exc, log):
    """In a multi-rank job, log which ranks died (or that a collective timed out) before `exc` propagates; other
    errors (bad data, a bug) are left to their own message."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    if not (isinstance(exc, getattr(dist, "DistError", ())) or any(w in str(exc) for w in COLLECTIVE_ERRORS)):
        return
    dead = dead_local_ranks()
    what = (f"rank(s) {dead} on this node died (killed, OOM?): see their last log lines" if dead else
            "a peer rank (maybe on another node) failed, or a collective exceeded --dist_timeout_minutes")
    log.error("rank %d stops: %s (%s: %s). The job ends; rerun with --resume auto to continue from the newest "
              "complete checkpoint", dist.get_rank(), what, type(exc).__name__, str(exc).splitlines()[0][:200])

"""CRC-32 of files (zlib, stdlib): written when a prepared shard or a checkpoint is saved, compared when it is opened,
so a file cut short, garbled or overwritten with the right size is caught. With a process group, the files are
split between the ranks and every rank gets every checksum (docs/CHECKPOINTS.md, docs/DATA.md)."""
import os
import zlib

CHUNK = 16 << 20  # bytes read per call: large enough that zlib, not Python, sets the speed


def file_crc32(path):
    """The CRC-32 of the file's bytes as 8 hex digits; None when it cannot be read."""
    crc, buf = 0, bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                crc = zlib.crc32(view[:n], crc)
    except OSError:
        return None
    return f"{crc:08x}"


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def share(root, names, world, rank):
    """This rank's part of `names`: largest file first to the least-loaded rank, so one large file (a full model's
    states) does not land on a rank with others. The same on every rank that sees the same sizes."""
    loads, mine = [0] * world, []
    for name in sorted(names, key=lambda n: (-_size(os.path.join(root, n)), n)):
        r = loads.index(min(loads))
        loads[r] += _size(os.path.join(root, name))
        if r == rank:
            mine.append(name)
    return mine


def _group_size_rank():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def crc32_of_files(root, names):
    """{name: CRC-32 (or None: unreadable)} of the files `names` under `root`. Under a process group every rank
    must call it with the same names: each reads its `share` and the results are gathered (a collective)."""
    import torch
    import torch.distributed as dist

    world, rank = _group_size_rank()
    mine = {n: file_crc32(os.path.join(root, n)) for n in share(root, names, world, rank)}
    if world == 1:
        return mine
    if dist.get_backend() == "nccl":  # objects travel on the current GPU: one per rank, as DeepSpeed sets it later
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}

"""Durable writes shared by checkpoints (engine/checkpoint.py, engine/universal.py) and prepared datasets
(data/prepared.py): fsync of files and directories, and write-to-temp-then-rename."""
import fcntl
import os
import shutil

TMP = ".tmp"  # suffix of a directory or file being written; renamed away when complete


def fsync_path(path):
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file and dir under `root`. Each rank calls it after its own writes, so every file is flushed at
    least once by its writer; a file that vanishes meanwhile (another rank's temp file, renamed) is skipped."""
    for dirpath, _, files in os.walk(root):
        for path in [os.path.join(dirpath, name) for name in files] + [dirpath]:
            try:
                fsync_path(path)
            except FileNotFoundError:
                pass


def write_atomic(path, data, tmp_suffix=".tmp"):
    """Write `data` (str, bytes, or a callable that writes into a binary file) to `path + tmp_suffix`, fsync it,
    rename it over `path`, fsync the directory: readers see the old file or the whole new one, never a part."""
    tmp = f"{path}{tmp_suffix}"
    with open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


def build_once(root, builder):
    """Run `builder(tmp_dir)` once, atomically (tmp dir + rename), under a file lock shared by all ranks."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(done):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            builder(tmp)
            shutil.rmtree(root, ignore_errors=True)
            os.rename(tmp, root)
            open(done, "w").close()
    return root


def file_sha256(path, chunk=4 << 20):
    """The sha256 of a file's bytes, as hex (content keys of the code cache and of --content_hash)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

"""Build huggingface_hub's cache layout by hand (no network): models--org--name/{blobs,snapshots/<rev>,refs/<ref>}."""
import hashlib
import os
import shutil


def repo_folder(cache, repo_id):
    return os.path.join(cache, "models--" + repo_id.replace("/", "--"))


def add_snapshot(cache, repo_id, revision, src_dir, refs=(), skip=()):
    """Put every file under `src_dir` (except names in `skip`) into the cache as snapshot `revision` (blobs named
    by content hash, snapshot entries are relative symlinks, as huggingface_hub writes them); point `refs` at it."""
    repo = repo_folder(cache, repo_id)
    snap = os.path.join(repo, "snapshots", revision)
    for dirpath, _, files in os.walk(src_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), src_dir)
            if rel in skip or name.startswith("."):
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                blob = os.path.join(repo, "blobs", hashlib.sha256(f.read()).hexdigest())
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            if not os.path.exists(blob):
                shutil.copyfile(os.path.join(dirpath, name), blob)
            link = os.path.join(snap, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    for ref in refs:
        set_ref(cache, repo_id, ref, revision)
    return snap


def set_ref(cache, repo_id, ref, revision):
    path = os.path.join(repo_folder(cache, repo_id), "refs", ref)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(revision)

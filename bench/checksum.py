"""Cost of the CRC-32 checksums (higgs_ds/checksums.py) on a full-fine-tuning checkpoint and on a prepared dir.

Trains the embedded tiny model with `--finetune full` for one step with `--save_every 1` (one CPU rank), timing
`Checkpointer.save` and the checksum part of it, then times the CRC-32 of that tag again (page cache warm, as at
save time) and of a 256 MiB file (per-file overheads amortised; zlib alone too) and gives MB/s. With the file's rate
it projects the 5.8B model's ZeRO-2 tag (bf16 weights 11.5 GB in mp_rank_00_model_states.pt + fp32 weights and two
AdamW moments, 69 GB, split over the ranks' optimizer files) on one rank and split over 8 ranks (the largest file
bounds it), and the check of a prepared LibriTTS-R (585 h) when a training run opens it, from the bytes per audio
frame of a prepared dir made here.

    python bench/checksum.py [--out bench/results/checksum_cpu.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

for _k, _v in (("DS_ACCELERATOR", "cpu"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

PARAMS_5_8B = 5_771_283_456
LIBRITTS_R_HOURS = 585


def timed_training(out):
    """One full-fine-tuning step of the tiny model with a checkpoint: (save seconds, checksum seconds in it)."""
    import higgs_ds.engine.checkpoint as ckpt
    from higgs_ds import train

    spent = {"save": 0.0, "crc": 0.0}

    def timer(fn, key):
        def wrapped(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t0
        return wrapped

    ckpt.Checkpointer.save = timer(ckpt.Checkpointer.save, "save")
    ckpt.crc32_of_files = timer(ckpt.crc32_of_files, "crc")
    rc = train.main(["--finetune", "full", "--max_steps", "1", "--save_every", "1", "--output_dir", out,
                     "--no_progress", "--tensorboard_dir", "none", "--learning_rate", "1e-5"])
    assert rc in (0, None), rc
    return spent["save"], spent["crc"]


def crc_rate(tag, repeats=5):
    """(bytes of the tag, best seconds to CRC every file on one rank)."""
    from higgs_ds.checksums import crc32_of_files
    from higgs_ds.engine.checkpoint import _manifest

    files = _manifest(tag)
    best = min(_seconds(lambda: crc32_of_files(tag, files)) for _ in range(repeats))
    return sum(files.values()), best


def file_rate(work, mib=256, repeats=3):
    """Bytes/s of file_crc32 on a `mib` MiB file in the page cache, and of zlib.crc32 on the same bytes in memory
    (the tag of the tiny model is small enough that per-file overheads show)."""
    import zlib

    from higgs_ds.checksums import file_crc32

    data = os.urandom(mib << 20)
    path = os.path.join(work, "big.bin")
    with open(path, "wb") as f:
        f.write(data)
    on_file = min(_seconds(lambda: file_crc32(path)) for _ in range(repeats))
    in_memory = min(_seconds(lambda: zlib.crc32(data)) for _ in range(repeats))
    return len(data) / on_file, len(data) / in_memory


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def prepared_bytes_per_frame(work):
    """Shard bytes per audio-code frame of a prepared dir of the synthetic samples (text, ids and JSON included)."""
    import pyarrow as pa

    from higgs_ds.assets import ensure_tiny_assets
    from higgs_ds.data.prepare import prepare_dataset
    from higgs_ds.data.synthetic import create_sample_data

    tiny = ensure_tiny_assets()
    train_file, _ = create_sample_data(os.path.join(work, "data"), num_samples=9, seed=7)
    out = os.path.join(work, "prepared")
    prepare_dataset([train_file], out, tiny.model_path, tiny.audio_tokenizer_path, show_progress=False)
    with open(os.path.join(out, "index.json")) as f:
        shards = [os.path.join(out, s["name"] + ".arrow") for s in json.load(f)["shards"]]
    frames = sum(sum(map(sum, pa.ipc.open_stream(pa.memory_map(p)).read_all().column("audio_frames").to_pylist()))
                 for p in shards)
    return sum(os.path.getsize(p) for p in shards) / frames


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "checksum_cpu.json"))
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        save_s, save_crc_s = timed_training(os.path.join(work, "run"))
        size, crc_s = crc_rate(os.path.join(work, "run", "checkpoints", "step1"))
        per_frame = prepared_bytes_per_frame(work)
        rate, in_memory = file_rate(work)  # bytes/s on one core: the projections' rate
    model_states, optim = 2 * PARAMS_5_8B, 12 * PARAMS_5_8B  # bf16 weights; fp32 weights + exp_avg + exp_avg_sq
    libritts = LIBRITTS_R_HOURS * 3600 * 25 * 2 * per_frame  # each utterance a target once and a reference once
    results = {
        "tiny_full_checkpoint_bytes": size, "crc32_seconds": round(crc_s, 4),
        "crc32_mb_per_s_tag": round(size / crc_s / 1e6),
        "crc32_mb_per_s_256mib_file": round(rate / 1e6), "zlib_crc32_mb_per_s_in_memory": round(in_memory / 1e6),
        "save_seconds": round(save_s, 3), "crc32_seconds_in_save": round(save_crc_s, 4),
        "crc32_share_of_save": round(save_crc_s / save_s, 3),
        "projected_5_8b_zero2_bytes": model_states + optim,
        "projected_5_8b_crc32_seconds_1_rank": round((model_states + optim) / rate, 1),
        "projected_5_8b_crc32_seconds_8_ranks": round(max(model_states, (model_states + optim) / 8) / rate, 1),
        "prepared_bytes_per_audio_frame": round(per_frame, 1),
        "projected_libritts_r_prepared_bytes": round(libritts),
        "projected_libritts_r_check_seconds_1_rank": round(libritts / rate, 2),
        "projected_libritts_r_check_seconds_8_ranks": round(libritts / rate / 8, 2),
        "machine": f"{os.cpu_count()} cores, shared: load average {load_before:.1f} at the start, "
                   f"{os.getloadavg()[0]:.1f} at the end",
    }
    write_results(results, args.out, as_json=True)


if __name__ == "__main__":
    main()

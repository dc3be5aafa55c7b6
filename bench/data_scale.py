"""Data at scale: prepare throughput (1 vs 2 processes), time from launch to the first optimizer step and peak RSS
of the training process, for today's JSONL path (validation + tokenization + code-cache lookups at every start)
and the prepared path (`higgs-ds prepare --output DIR`, memory-mapped Arrow), on synthetic LibriTTS-like corpora.

Corpora: `--sizes` utterances of `--speakers` speakers, each a five-message voice-cloning sample whose reference
is another utterance of the same speaker. Encoding every distinct clip of a 16k-utterance corpus (about nine hours
of audio) would dominate the run, so the scale corpora draw their
clips from a pool of `--pool` distinct wavs (tokenization, validation, Arrow I/O and the sampler still see every
utterance); the prepare-throughput corpus (`--prepare_samples`, 400: enough work that process start-up does not
dominate now that the embedded audio tokenizer encodes ~50x faster than real time) has distinct clips only.

    python bench/data_scale.py [--sizes 1000 4000 16000] [--json] [--out bench/results/data_scale_cpu.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

PY = sys.executable
TRAIN_ARGS = ["--max_steps", "1", "--batch_size", "2", "--no_progress", "--tensorboard_dir", "none"]


def make_corpus(root, n, pool, speakers, seed=0):
    """`root/train.jsonl`: n samples over `pool` wavs (`root/wavs/`, shared across sizes when it exists)."""
    import soundfile as sf

    from higgs_ds.data.synthetic import _sentence, _speakers, speech_like, voice_cloning_sample

    rng = np.random.default_rng(seed)
    wav_dir = os.path.join(os.path.dirname(root), f"pool{pool}")
    os.makedirs(wav_dir, exist_ok=True)
    voices = _speakers(speakers, np.random.default_rng(seed))
    for i in range(pool):
        path = os.path.join(wav_dir, f"{i:05d}.wav")
        if not os.path.exists(path):
            sf.write(path, speech_like(rng, rng.uniform(0.6, 1.2), **voices[i % speakers]), 24000, subtype="PCM_16")
    os.makedirs(root, exist_ok=True)
    by_speaker = [list(range(s, pool, speakers)) for s in range(speakers)]
    path = os.path.join(root, "train.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            clips = by_speaker[i % speakers]
            tgt, ref = rng.choice(clips, 2, replace=False)
            row = voice_cloning_sample(f"{wav_dir}/{ref:05d}.wav", _sentence(rng), f"{wav_dir}/{tgt:05d}.wav",
                                       _sentence(rng), f"speaker_{i % speakers}")
            f.write(json.dumps({"id": f"utt{i}", **row}) + "\n")
    return path


def _peak_rss(pid, peak, stop):
    """Poll the child's VmHWM (its own peak RSS: ru_maxrss would carry this large parent's over fork)."""
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
            peak[0] = max(peak[0], kb)
        except (OSError, StopIteration):
            return
        stop.wait(0.05)


def timed(cmd, first_line=None, env=None):
    """Run `cmd`; seconds until a stdout line containing `first_line` (or the exit), its peak RSS (MB), output."""
    import threading

    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak, stop = [0], threading.Event()
    poller = threading.Thread(target=_peak_rss, args=(proc.pid, peak, stop), daemon=True)
    poller.start()
    seen, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if seen is None and first_line and first_line in line:
            seen = time.time() - t0
            stop.set()  # the peak up to the first step
    stop.set()
    poller.join()
    if proc.wait():
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{''.join(lines[-40:])}")
    return (seen if seen is not None else time.time() - t0), peak[0] / 1024, "".join(lines)


def prepare(data, out, workers, shard_size=256):
    cmd = [PY, "-m", "higgs_ds.cli", "prepare", "--data", data, "--output", out, "--num_workers", str(workers),
           "--shard_size", str(shard_size)]
    seconds, _, log = timed(cmd)
    return seconds, json.loads(log.strip().splitlines()[-1])


def first_step(data, out, extra=()):
    seconds, rss, _ = timed([PY, "higgs_ds/train.py", "--train_data", data, "--output_dir", out, *TRAIN_ARGS, *extra],
                           "step 1/1")
    return round(seconds, 2), round(rss, 1)


def scale_runs(tmp, sizes, pool, speakers):
    """Per size: first-step time and RSS of a prepared dir and of the JSONL source's second start (its copy in the
    prepare cache made by a first start)."""
    rows = {}
    for n in sizes:
        data = make_corpus(os.path.join(tmp, f"n{n}"), n, pool, speakers)
        prep_s, stats = prepare(data, os.path.join(tmp, f"n{n}", "prepared"), 1)
        first_step(data, os.path.join(tmp, f"out_j{n}_first"))  # prepares the JSONL into the cache
        jsonl = first_step(data, os.path.join(tmp, f"out_j{n}"))
        prepared = first_step(os.path.join(tmp, f"n{n}", "prepared"), os.path.join(tmp, f"out_p{n}"))
        rows[n] = {"jsonl": {"first_step_s": jsonl[0], "peak_rss_mb": jsonl[1]},
                   "prepared": {"first_step_s": prepared[0], "peak_rss_mb": prepared[1], "prepare_s": round(prep_s, 2),
                                "samples": stats["num_samples"]}}
        print(f"n={n}: first step jsonl {jsonl[0]} s ({jsonl[1]} MB), prepared {prepared[0]} s ({prepared[1]} MB); "
              f"prepare {prep_s:.1f} s", flush=True)
    return rows


def parallel_prepare(tmp, n):
    """Prepare throughput on `n` samples of distinct clips, 1 then 2 processes (shards of 4 samples)."""
    from higgs_ds.data.synthetic import create_sample_data

    data, _ = create_sample_data(os.path.join(tmp, "distinct"), num_samples=n + 1, val_fraction=1 / (n + 1))
    out = {}
    for workers in (1, 2):
        seconds, stats = prepare(data, os.path.join(tmp, f"distinct_w{workers}"), workers, shard_size=4)
        out[workers] = {"seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 3),
                        "audio_hours_per_s": round(stats["audio_hours"] / seconds, 6)}
        print(f"prepare {n} samples, {workers} process(es): {seconds:.1f} s", flush=True)
    return out


def project(rows, sizes, key, target=375_000):
    """Linear fit of `key` over the sizes, evaluated at `target` utterances."""
    xs = np.array(sizes, dtype=float)
    ys = np.array([rows[n][key]["first_step_s"] for n in sizes])
    slope, icpt = np.polyfit(xs, ys, 1) if len(xs) > 1 else (0.0, ys[0])
    if slope <= 0:  # flat within noise: project the largest measurement
        return round(float(ys[-1]), 1)
    return round(float(slope * target + icpt), 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="corpus sizes (utterances)")
    p.add_argument("--pool", type=int, default=64, help="distinct wavs the scale corpora draw from")
    p.add_argument("--speakers", type=int, default=16, help="speakers of the scale corpora")
    p.add_argument("--prepare_samples", type=int, default=400, help="samples (distinct clips) of the throughput run")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--out", help="also write the JSON object here")
    args = p.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        rows = scale_runs(tmp, sizes, args.pool, args.speakers)
        par = parallel_prepare(tmp, args.prepare_samples)
    lo, hi = sizes[0], sizes[-1]
    result = {
        "sizes": sizes, "pool_wavs": args.pool, "runs": {str(n): r for n, r in rows.items()},
        "first_step_s": {str(n): rows[n]["prepared"]["first_step_s"] for n in sizes},
        "first_step_s_jsonl": {str(n): rows[n]["jsonl"]["first_step_s"] for n in sizes},
        "first_step_growth": round(rows[hi]["prepared"]["first_step_s"] / rows[lo]["prepared"]["first_step_s"], 3),
        "first_step_growth_jsonl": round(rows[hi]["jsonl"]["first_step_s"] / rows[lo]["jsonl"]["first_step_s"], 3),
        "rss_growth_mb": round(rows[hi]["prepared"]["peak_rss_mb"] - rows[lo]["prepared"]["peak_rss_mb"], 1),
        "rss_growth_mb_jsonl": round(rows[hi]["jsonl"]["peak_rss_mb"] - rows[lo]["jsonl"]["peak_rss_mb"], 1),
        "prepare": {str(k): v for k, v in par.items()}, "prepare_samples": args.prepare_samples,
        "prepare_parallel_speedup": round(par[1]["seconds"] / par[2]["seconds"], 3),
        "projection_375k_first_step_s": {"jsonl": project(rows, sizes, "jsonl"),
                                         "prepared": project(rows, sizes, "prepared")},
        "projection_375k_prepare_hours_8_ranks": round(375_000 / (8 * par[1]["samples_per_s"]) / 3600, 2),
        "cpu_count": os.cpu_count(),
    }
    print(f"projection to 375k utterances: first step {result['projection_375k_first_step_s']['jsonl']} s (JSONL) "
          f"vs {result['projection_375k_first_step_s']['prepared']} s (prepared) per start; prepare on 8 ranks at "
          f"this machine's 1-process rate: {result['projection_375k_prepare_hours_8_ranks']} h")
    write_results(result, args.out, args.json)


if __name__ == "__main__":
    main()

"""The README's first command (`bash scripts/train_tiny.sh`: deepspeed launcher, 2 CPU ranks, ZeRO-2, the embedded
tiny default): seconds from launch to the first optimizer step's log line, on an empty cache (the tiny assets are
built, the embedded set is prepared once by rank 0) and on a second start (everything reused).
Target: <= 30 s once the venv exists.

    python bench/first_step.py [--json] [--out bench/results/first_step_cpu.json]
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_parser, write_results  # noqa: E402
from data_scale import timed  # noqa: E402

STEP_ARGS = ["--max_steps", "1", "--log_every", "1", "--no_progress", "--tensorboard_dir", "none"]


def start(cache, out, extra=()):
    cmd = ["bash", "scripts/train_tiny.sh", *STEP_ARGS, "--output_dir", out, *extra]
    seconds, _, _ = timed(cmd, "step 1/", env={"HIGGS_DS_CACHE": cache, "MASTER_PORT": "29655"})
    return {"first_step_s": round(seconds, 2)}


def main():
    args = bench_parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        result = {"empty_cache": start(cache, os.path.join(tmp, "o1")),
                  "second_start": start(cache, os.path.join(tmp, "o2"))}
    result["cpu_count"] = os.cpu_count()
    for name, r in result.items():
        if isinstance(r, dict):
            print(f"{name:30s} first step after {r['first_step_s']:6.2f} s")
    write_results(result, args.out, args.json)


if __name__ == "__main__":
    main()

"""On-policy DPO rounds on the tiny model (CPU): does the held-out reward rise over the rounds beyond its spread?

Each seed is one `train.py --stage dpo --rounds R` run (one process, LoRA, ZeRO-2 on CPU): train prompts and held-out
prompts are synthetic voice-cloning samples (data/synthetic.py, other sentences and speakers); the reward is
"stopping on time", the duration and stop terms of evaluation/reward.py (−|ln(duration / the prompt's target
duration)| + 1 when the clip ended before the budget), which the tiny model moves by when it stops. Each round trains
DPO with an SFT term on the chosen clips and per-code log-probs (--sft_weight 1 --length_normalize). Every run writes
output_dir/rounds.json: the held-out mean reward before round 0 and after each round (the same candidate seeds every
time; a candidate without audio counts as a 0 s clip that did not stop). The claim: the mean over seeds of the gain
(after the last round minus before round 0) against the run-to-run spread (`summarise`).

    python bench/rounds.py --json                      # 5 seeds -> bench/results/rounds_cpu.json (~4 min a seed on 2 cores)
    python bench/rounds.py --seeds 1 --rounds 2 --out /tmp/r.json
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, bench_parser, write_results  # noqa: E402


def prompt_sets(root, n_train, n_heldout):
    """(train prompts, held-out prompts): two synthetic sets drawn with other seeds (other sentences, speakers)."""
    from higgs_ds.data.synthetic import create_sample_data

    train, _ = create_sample_data(os.path.join(root, "train"), num_samples=n_train + 1, seed=11)
    heldout, _ = create_sample_data(os.path.join(root, "heldout"), num_samples=n_heldout + 1, seed=29)
    return train, heldout


def run_seed(args, seed, train, heldout, out):
    cmd = [sys.executable, os.path.join(ROOT, "higgs_ds", "train.py"), "--stage", "dpo", "--rounds", str(args.rounds),
           "--samples_per_prompt", str(args.k), "--steps_per_round", str(args.steps), "--round_max_new_tokens",
           str(args.max_new_tokens), "--train_data", train, "--val_data", heldout, "--output_dir", out,
           "--batch_size", "2", "--learning_rate", str(args.lr), "--beta", str(args.beta), "--sft_weight", str(args.sft_weight), "--seed", str(seed),
           "--round_weights", args.weights, "--warmup_ratio", "0", "--save_every", "0", "--no_progress"]
    cmd += ["--length_normalize"] if args.length_normalize else []
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode:
        raise RuntimeError(f"seed {seed} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "rounds.json")) as f:
        rewards = json.load(f)["heldout_reward"]
    return rewards, [heldout_clips(os.path.join(out, "rounds", f"heldout{i}")) for i in range(len(rewards))]


def heldout_clips(path):
    """Mean duration (s) and stop rate of a held-out measurement's candidates (those without audio: 0 s, no stop)."""
    rows = []
    for name in sorted(os.listdir(os.path.join(path, "rows"))):
        with open(os.path.join(path, "rows", name)) as f:
            rows.append(json.load(f))
    return {"mean_duration_s": statistics.mean(r.get("duration_s", 0.0) for r in rows),
            "stopped": statistics.mean(float(r.get("stopped", False)) for r in rows),
            "target_duration_s": statistics.mean(r["target_duration_s"] for r in rows)}


def summarise(per_seed):
    """Mean and standard deviation over seeds of each round's held-out reward and of the gain (last − first). The rise
    is beyond the run-to-run spread when every seed's last reward is above every seed's first, and the mean gain is
    more than twice the spread over seeds of the gain, of the first rewards and of the last."""
    rounds = list(zip(*per_seed))
    gains = [r[-1] - r[0] for r in per_seed]
    sd = statistics.stdev if len(per_seed) > 1 else (lambda x: 0.0)
    spread = max(sd(gains), sd(rounds[0]), sd(rounds[-1]))
    return {"mean_per_round": [statistics.mean(r) for r in rounds], "sd_per_round": [sd(r) for r in rounds],
            "gain_per_seed": gains, "mean_gain": statistics.mean(gains), "sd_gain": sd(gains),
            "rises_beyond_spread": min(rounds[-1]) > max(rounds[0]) and statistics.mean(gains) > 2 * spread}


def main(argv=None):
    p = bench_parser(__doc__, os.path.join(ROOT, "bench", "results", "rounds_cpu.json"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=4, help="candidates per prompt")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per round")
    p.add_argument("--train_prompts", type=int, default=16)
    p.add_argument("--heldout_prompts", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--sft_weight", type=float, default=1.0, help="train.py --sft_weight: CE on the chosen clips")
    p.add_argument("--no_length_normalize", dest="length_normalize", action="store_false",
                   help="sum the log-probs (default: train.py --length_normalize, per labelled code)")
    p.add_argument("--weights", default="duration=1,stop=1", help="train.py --round_weights: stopping on time")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout = prompt_sets(tmp, args.train_prompts, args.heldout_prompts)
        per_seed, clips = [], []
        for seed in range(args.seeds):
            rewards, seed_clips = run_seed(args, seed, train, heldout, os.path.join(tmp, f"seed{seed}"))
            per_seed.append(rewards)
            clips.append(seed_clips)
            print(f"seed {seed}: held-out reward per round {[round(x, 4) for x in rewards]}", flush=True)
    summary = {"device": "cpu", "model": "tiny (embedded default, random weights)", "reward": args.weights,
               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
               "heldout_reward_per_seed": per_seed, "heldout_clips_per_seed": clips, **summarise(per_seed)}
    print(json.dumps({k: summary[k] for k in ("mean_per_round", "sd_per_round", "mean_gain", "sd_gain")}))
    return write_results(summary, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())

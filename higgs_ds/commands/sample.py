"""`higgs-ds sample`: K sampled candidates per voice-cloning prompt, the first step of preference pairs.

    higgs-ds sample --data prompts.jsonl --model_path DIR [--adapter OUT_DIR] --num_samples 4 --output DIR
    torchrun --nproc_per_node 8 -m higgs_ds.cli sample ...      # every rank takes its share of the prompts

Writes DIR/wavs/*.wav, DIR/rows/*.json (one per candidate: a rerun skips them) and DIR/candidates.jsonl, the request
file of `higgs-ds score` (docs/PREFERENCE.md). Candidate k of prompt i uses a seed derived from (--seed, i, k).
"""
import argparse
import os

from ..errors import add_debug_flag, run_entry_point
from . import add_model_flags


def build_parser():
    p = argparse.ArgumentParser(prog="higgs-ds sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="voice-cloning ChatML prompts (the format training reads)")
    p.add_argument("--output", required=True, help="output dir; rerun with the same flags to continue")
    add_model_flags(p, "adapter dir or training output dir, merged in memory")
    p.add_argument("--num_samples", type=int, default=4, help="candidates per prompt (K)")
    p.add_argument("--seed", type=int, default=0, help="base seed; candidate k of prompt i derives its own")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=50)
    p.add_argument("--max_new_tokens", type=int, default=1024, help="budget of each candidate (frames, 25 a second)")
    add_debug_flag(p)
    return p


def _run(argv):
    p = build_parser()
    args = p.parse_args(argv)
    if args.num_samples < 2 or args.seed < 0 or args.temperature <= 0:
        p.error("--num_samples must be at least 2, --seed at least 0 and --temperature above 0 (sampling)")
    from ..data.prepare import dist_env
    from ..inference.sampling import SamplingConfig, run_sampling
    from ..logs import setup_logging

    setup_logging()
    rank, world, local = dist_env()
    config = SamplingConfig(args.num_samples, args.seed, args.temperature, args.top_p, args.top_k,
                            args.max_new_tokens)
    paths = _model_paths(args)
    settings = {"model_path": paths.model_path, "adapter": args.adapter and os.path.abspath(args.adapter)}
    run_sampling(args.data, args.output, config, lambda: _engine(paths, args.adapter, local), settings, rank, world)
    return 0


def _model_paths(args):
    from ..assets import resolve_model_paths
    from ..inference.export import base_model_path, find_adapter

    base = args.model_path or (base_model_path(find_adapter(args.adapter)) if args.adapter else None)
    return resolve_model_paths(base, args.audio_tokenizer_path)


def _engine(paths, adapter, local_rank):
    import torch

    from ..inference.generate import load_engine

    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return load_engine(paths.model_path, paths.audio_tokenizer_path, adapter, device)


def main(argv=None):
    return run_entry_point(_run, argv)

"""`higgs-ds benchmark`: voice-cloning numbers in the form the field compares (Seed-TTS-eval protocol).

    higgs-ds benchmark --meta seedtts_testset/en/meta.lst --output results.json \\
        [--asr_model WHISPER_LARGE_V3_DIR] [--sim_model WAVLM_LARGE_SV_DIR] [--adapter DIR | --model_path DIR]

Reads a Seed-TTS-eval list (`utt|prompt_text|prompt_wav|text[|ground_truth_wav]`), clones every line greedily
(with `--adapter`: with the adapter and with its base model), scores each clip (WER/CER with the ASR dir, SIM
against the prompt wav, DNSMOS, duration ratio, stop rate, silence, repetition) and writes a table and a JSON
naming the exact scoring models. Under a launcher every rank takes every world-th line; each clip's wav and row
are kept in `--work_dir`, so a rerun continues where the last one stopped. docs/EVAL.md says how to reproduce
published numbers.
"""
import argparse
import json
import logging
import os

from ..errors import add_debug_flag

log = logging.getLogger(__name__)


def build_parser():
    from . import add_model_flags
    from .score import add_backend_flags

    p = argparse.ArgumentParser(prog="higgs-ds benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", required=True, help="Seed-TTS-eval list: utt|prompt_text|prompt_wav|text[|gt_wav]")
    p.add_argument("--output", required=True, help="results JSON (means with 95%% CI per system, rows, scorers)")
    add_model_flags(p, "adapter dir or training output dir: scored beside its base model")
    p.add_argument("--max_new_tokens", type=int, default=1024, help="generation budget of each line (frames)")
    p.add_argument("--work_dir", help="generated wavs and per-line rows (default: OUTPUT.work); reruns resume")
    add_backend_flags(p)
    add_debug_flag(p)
    return p


def load_model(args):
    """(model, paths, adapter dir or None): the base model, with the adapter on top when given (peft)."""
    from ..assets import resolve_model_paths
    from ..inference.export import base_model_path, find_adapter
    from ..models.loading import load_model as load

    adapter = find_adapter(args.adapter) if args.adapter else None
    paths = resolve_model_paths(args.model_path or (base_model_path(adapter) if adapter else None),
                                args.audio_tokenizer_path)
    model = load(paths.model_path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.to(device()).eval(), paths, adapter


def device():
    """This rank's GPU when there is one (LOCAL_RANK under a launcher), else the CPU."""
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def clone_lines(model, paths, prompts, scorer, work, max_new_tokens):
    """Generate and score this rank's lines for every system; rows (and wavs) land in `work/<system>/<utt>.*`,
    and lines already there are skipped."""
    import contextlib

    import soundfile as sf

    from ..durable import write_atomic
    from ..evaluation.prompts import generate_one, score_response
    from ..inference.preview import live_engine

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    engine = live_engine(base, paths)
    for system in systems_of(model):
        os.makedirs(os.path.join(work, system), exist_ok=True)
        off = model.disable_adapter() if system == "base" else contextlib.nullcontext()
        with off:
            for p in prompts:
                row_file = os.path.join(work, system, f"{p.sample_id}.json")
                if os.path.isfile(row_file):
                    continue
                resp = generate_one(engine, p, max_new_tokens)
                if resp is not None and resp.audio is not None:
                    sf.write(os.path.join(work, system, f"{p.sample_id}.wav"), resp.audio, resp.sampling_rate)
                row = {"utt": p.sample_id, **score_response(engine, resp, p, scorer)}
                write_atomic(row_file, json.dumps(row))
                log.info("%s %s: %s", system, p.sample_id, row_summary(row))


def systems_of(model):
    return ("adapter", "base") if hasattr(model, "disable_adapter") else ("model",)


def row_summary(row):
    return ", ".join(f"{k} {row[k]:.3f}" for k in ("sim", "wer", "dnsmos_ovrl", "duration_ratio") if row.get(k)
                     is not None)


def collect(work, prompts, systems):
    """{system: rows in list order} read back from the work dir."""
    out = {}
    for system in systems:
        rows = []
        for p in prompts:
            with open(os.path.join(work, system, f"{p.sample_id}.json")) as f:
                rows.append(json.load(f))
        out[system] = rows
    return out


def scoring_models(args, scorer):
    """The exact scorers, so numbers can be put next to published ones scored with the same models."""
    from importlib.metadata import version

    sim = os.path.abspath(args.sim_model) if args.sim_model else f"resemblyzer {version('resemblyzer')} (built in)"
    return {"sim": {"backend": scorer.backends["sim"], "model": sim},
            "asr": {"backend": "whisper", "model": os.path.abspath(args.asr_model)} if args.asr_model else None,
            "dnsmos": {"backend": "dnsmos", "model": f"speechmos {version('speechmos')} (P.835 + P.808 ONNX)"}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    from ..evaluation.compare import format_generation_table, summarize_systems
    from ..evaluation.scorer import Scorer
    from ..evaluation.seedtts import read_meta
    from .score import check_model_dir

    prompts = read_meta(args.meta)  # a bad line stops here, before any model loads
    for d, flag in ((args.sim_model, "--sim_model"), (args.asr_model, "--asr_model")):
        check_model_dir(d, flag)
    rank, world = ranks()
    model, paths, adapter = load_model(args)
    scorer = Scorer(args.sim_model, args.asr_model, args.score_device)
    work = args.work_dir or args.output + ".work"
    clone_lines(model, paths, prompts[rank::world], scorer, work, args.max_new_tokens)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        summary = summarize_systems(collect(work, prompts, systems_of(model)))
        print(format_generation_table(summary, asr=scorer.asr is not None, per_group=False))
        result = {"meta": os.path.abspath(args.meta), "lines": len(prompts), "scoring": scoring_models(args, scorer),
                  "models": {"model_path": paths.model_path, "adapter": adapter and os.path.abspath(adapter)},
                  "generation": {"decoding": "greedy", "max_new_tokens": args.max_new_tokens}, "systems": summary}
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def ranks():
    """(rank, world) under a launcher (a gloo/NCCL group for the final barrier), (0, 1) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from ..engine.distributed import init_distributed

    return init_distributed(timeout_minutes=24 * 60)  # ranks wait for the slowest one's share of the list

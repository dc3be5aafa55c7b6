"""`higgs-ds` command line: train, validate, prepare (audio-code cache or manifest conversion).

    higgs-ds validate --data train.jsonl val.jsonl [--on_bad_sample skip] [--report report.json]
    higgs-ds prepare --data train.jsonl --audio_tokenizer_path DIR [--code_cache_dir DIR]
    higgs-ds prepare --data SOURCE... --output DIR [--num_workers N]   # prepared dataset (docs/DATA.md)
    higgs-ds prepare --manifest utts.tsv --output train.jsonl [--pair_by_speaker]
    higgs-ds train ...                      # the flags of higgs_ds/train.py
    higgs-ds export --checkpoint OUT_DIR --output DIR [--merge] [--dtype bf16|fp32]
    higgs-ds generate --model_path DIR --audio_tokenizer_path DIR --ref_audio W --ref_text T --text T
    higgs-ds evaluate --data val.jsonl --adapter OUT_DIR
    higgs-ds convert --input DIR|ORG/NAME[@REV] --output DIR [--to boson|native] [--audio_tokenizer]
    higgs-ds score --requests requests.jsonl [--output scores.json]   # SIM, DNSMOS, WER (docs/EVAL.md)
    higgs-ds benchmark --meta meta.lst --output results.json [--adapter DIR]   # Seed-TTS-eval protocol
    higgs-ds export --checkpoint OUT_DIR --output DIR --average last:K|best:K   # mean of K checkpoints
    higgs-ds plan --model_path DIR --ds_config FILE --num_gpus N --tokens_per_gpu T [--gpu h200]   # memory, speed
    higgs-ds sample --data prompts.jsonl --model_path DIR --num_samples K --output DIR   # candidates (PREFERENCE.md)
    higgs-ds pairs --candidates DIR/candidates.jsonl --scores scores.json --output pairs.jsonl   # DPO pairs
"""
import argparse
import json
import os
import sys

from .config import add_flags
from .errors import InputNotFound, run_entry_point


def _parser():
    p = argparse.ArgumentParser(prog="higgs-ds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check every sample and print a report (docs/DATA.md)")
    v.add_argument("--data", nargs="+", required=True, help="ChatML JSONL / JSON list files")
    v.add_argument("--tokenizer_path", help="text tokenizer dir or Hub repo id (org/name[@revision]; for token "
                                            "lengths); default: the embedded tiny one")
    v.add_argument("--report", help="also write the reports as JSON here")
    v.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    from .data.validate import ValidationConfig

    add_flags(v, ValidationConfig)
    pr = sub.add_parser("prepare", help="fill the audio-code cache, or convert a manifest to ChatML")
    pr.add_argument("--data", nargs="+", help="ChatML files whose audio to encode into the code cache")
    pr.add_argument("--audio_tokenizer_path", help="audio tokenizer dir (config.json, model.pth) or Hub repo id; "
                                                  "default: the tiny one")
    pr.add_argument("--code_cache_dir", help="default: $HIGGS_DS_CACHE/codes/<audio tokenizer id>/")
    pr.add_argument("--manifest", help="TSV/CSV/JSONL with ref_audio, ref_text, target_audio, target_text, speaker")
    pr.add_argument("--output", help="ChatML JSONL written from --manifest; with --data: the prepared dataset dir")
    pr.add_argument("--pair_by_speaker", action="store_true",
                    help="draw each row's reference from another utterance of the same speaker")
    pr.add_argument("--seed", type=int, default=0, help="seed of --pair_by_speaker and of the pairs of utterance "
                                                        "corpora (LibriTTS tree, parquet, WebDataset tar)")
    pr.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    # a prepared dataset (--data SOURCE... --output DIR), higgs_ds/data/prepare.py
    pr.add_argument("--tokenizer_path", help="text tokenizer dir or Hub repo id (its tokenizer files only) of the "
                                            "prepared dataset; default: the tiny one")
    pr.add_argument("--num_workers", type=int, default=1, help="prepare processes on this machine (per rank)")
    pr.add_argument("--shard_size", type=int, default=256, help="samples per shard (the unit of resumption)")
    add_flags(pr, ValidationConfig)
    from .data.sources.config import SourceConfig

    add_flags(pr, SourceConfig)
    from .data.pair_check import PairCheckConfig

    add_flags(pr, PairCheckConfig)
    from .data.quality import QualityConfig

    add_flags(pr, QualityConfig)
    sub.add_parser("train", help="train a LoRA adapter (see `higgs-ds train --help`)", add_help=False)
    for name, what in (("export", "adapter -> adapter dir or merged model dir"),
                       ("generate", "voice cloning through HiggsAudioServeEngine"),
                       ("evaluate", "teacher-forced loss and per-codebook accuracy"),
                       ("plan", "predict per-GPU memory and step time from config.json (docs/PERF.md)"),
                       ("convert", "model or audio tokenizer dir / Hub id: boson <-> transformers-native (docs/INTEROP.md)"),
                       ("score", "SIM, DNSMOS and WER of generated audio (docs/EVAL.md)"),
                       ("benchmark", "Seed-TTS-eval list: clone and score, base beside adapter (docs/EVAL.md)"),
                       ("sample", "K sampled candidates per prompt, for preference pairs (docs/PREFERENCE.md)"),
                       ("pairs", "scored candidates -> DPO pairs, best vs worst by reward (docs/PREFERENCE.md)")):
        sub.add_parser(name, help=f"{what} (see `higgs-ds {name} --help`)", add_help=False)
    return p


DELEGATED = {"export": ".commands.export", "generate": ".commands.generate", "evaluate": ".commands.evaluate",
             "plan": ".commands.plan", "convert": ".commands.convert",
             "score": ".evaluation.score", "benchmark": ".commands.benchmark",
             "sample": ".commands.sample", "pairs": ".commands.pairs"}


def _tiny():
    from .assets import ensure_tiny_assets

    return ensure_tiny_assets()


def _speaker_embedder():
    """The pair check's encoder, on this rank's GPU when there is one."""
    import torch

    from .data.prepare import dist_env
    from .evaluation.speaker import file_embedder

    return file_embedder(f"cuda:{dist_env()[2]}" if torch.cuda.is_available() else "cpu")


def _dnsmos():
    from .evaluation.dnsmos import DnsmosScorer

    scorer = DnsmosScorer()
    return lambda wav: scorer.score(wav)["dnsmos_ovrl"]


def _asr(path):
    """The quality columns' ASR: Whisper from a local dir, on this rank's GPU when there is one."""
    import torch

    from .data.prepare import dist_env
    from .evaluation.asr import WhisperASR

    return WhisperASR.load(path, f"cuda:{dist_env()[2]}" if torch.cuda.is_available() else "cpu").score


def validate(args):
    """Validate data files; only the text tokenizer is loaded (no model, no DeepSpeed): it starts in about a second."""
    from .config import from_args
    from .data.open_prepared import stored_report
    from .data.prepared import is_prepared
    from .data.validate import ValidationConfig, summary_text, validate_files
    from .models.loading import load_text_tokenizer
    from .models.locate import tokenizer_dir as resolve_tokenizer

    tokenizer_dir = resolve_tokenizer(args.tokenizer_path) or _tiny().model_path
    if not os.path.isdir(tokenizer_dir):
        raise InputNotFound(f"--tokenizer_path: directory not found: {tokenizer_dir}")
    config, stats = from_args(ValidationConfig, args), {}
    files = [p for p in args.data if not is_prepared(p)]
    for path, report in zip(files, validate_files(files, load_text_tokenizer(tokenizer_dir), config)):
        stats[path] = report.to_dict()
    for path in (p for p in args.data if is_prepared(p)):  # a prepared dir: the report stored at prepare time
        stats[path] = stored_report(path, config.on_bad_sample)
    for path in args.data:
        print(f"{path}{' (prepared)' if is_prepared(path) else ''}\n{summary_text(stats[path])}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


def _check_source_flags(args, parser):
    from .config import check_ranges
    from .data.pair_check import PairCheckConfig
    from .data.sources.config import SourceConfig

    check_ranges(parser, args, SourceConfig, PairCheckConfig)
    lo, hi = args.min_ref_seconds, args.max_ref_seconds
    if lo is not None and hi is not None and lo > hi:
        parser.error(f"--min_ref_seconds {lo} is above --max_ref_seconds {hi}: no utterance can be a reference")


def prepare(args, parser):
    if args.manifest:
        from .data.manifest import convert_manifest

        if not args.output:
            parser.error("--manifest needs --output")
        n = convert_manifest(args.manifest, args.output, args.pair_by_speaker, args.seed)
        print(f"wrote {n} samples to {args.output}")
        return 0
    if not args.data:
        parser.error("prepare needs --data (code cache) or --manifest (conversion)")
    if args.output:  # a prepared dataset
        from .data.prepare import prepare_from_args
        from .data.prepare_checks import Scorers

        _check_source_flags(args, parser)
        return prepare_from_args(args, _tiny, Scorers(_speaker_embedder, _dnsmos, _asr))
    from .data.code_cache import prepare_codes
    from .models.locate import audio_tokenizer_dir  # Hub ids / native dirs

    stats = prepare_codes(args.data, audio_tokenizer_dir(args.audio_tokenizer_path) or _tiny().audio_tokenizer_path,
                          args.code_cache_dir)
    print(json.dumps(stats))
    return 0


def main(argv=None):
    """`higgs-ds COMMAND ...`: a user error is one message and its exit code (docs/ERRORS.md)."""
    return run_entry_point(_main, argv)


def _main(argv):
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    if argv[:1] and argv[0] in DELEGATED:
        import importlib

        return run_entry_point(importlib.import_module(DELEGATED[argv[0]], __package__).main, argv[1:])
    from .logs import setup_logging

    setup_logging()
    parser = _parser()
    args = parser.parse_args(argv)
    return validate(args) if args.command == "validate" else prepare(args, parser)


if __name__ == "__main__":
    sys.exit(main())

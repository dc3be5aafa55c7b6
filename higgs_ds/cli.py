"""`higgs-ds` command line: train, validate, prepare (sources into a prepared dataset dir).

    higgs-ds validate --data train.jsonl val.jsonl [--on_bad_sample skip] [--report report.json]
    higgs-ds prepare --data SOURCE... --output DIR [--num_workers N]   # prepared dataset (docs/DATA.md)
    higgs-ds prepare --data utts.tsv [--pair_by_speaker]   # into training's cache dir for that source (printed)
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
import importlib
import sys

from .errors import run_entry_point

COMMANDS = (("validate", "check every sample and print a report (docs/DATA.md)"),
            ("prepare", "validate, tokenize and encode sources once into a prepared dataset dir (docs/DATA.md)"),
            ("train", "train: the flags of higgs_ds/train.py (SFT or --stage dpo)"),
            ("export", "adapter -> adapter dir or merged model dir"),
            ("generate", "voice cloning through HiggsAudioServeEngine"),
            ("evaluate", "teacher-forced loss and per-codebook accuracy"),
            ("plan", "predict per-GPU memory and step time from config.json (docs/PERF.md)"),
            ("convert", "model or audio tokenizer dir / Hub id: boson <-> transformers-native (docs/INTEROP.md)"),
            ("score", "SIM, DNSMOS and WER of generated audio (docs/EVAL.md)"),
            ("benchmark", "Seed-TTS-eval list: clone and score, base beside adapter (docs/EVAL.md)"),
            ("sample", "K sampled candidates per prompt, for preference pairs (docs/PREFERENCE.md)"),
            ("pairs", "scored candidates -> DPO pairs, best vs worst by reward (docs/PREFERENCE.md)"))


def _parser():
    p = argparse.ArgumentParser(prog="higgs-ds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in COMMANDS:
        sub.add_parser(name, help=f"{what} (see `higgs-ds {name} --help`)", add_help=False)
    return p


DELEGATED = {"export": ".commands.export", "generate": ".commands.generate", "evaluate": ".commands.evaluate",
             "plan": ".commands.plan", "convert": ".commands.convert", "score": ".commands.score",
             "benchmark": ".commands.benchmark", "sample": ".commands.sample", "pairs": ".commands.pairs",
             "validate": ".commands.validate", "prepare": ".commands.prepare"}


def main(argv=None):
    """`higgs-ds COMMAND ...`: a user error is one message and its exit code (docs/ERRORS.md)."""
    return run_entry_point(_main, argv)


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    if argv[:1] and argv[0] in DELEGATED:
        return run_entry_point(importlib.import_module(DELEGATED[argv[0]], __package__).main, argv[1:])
    _parser().parse_args(argv)  # no command, an unknown one or --help: usage, exit 2 (0 for --help)
    return 2


if __name__ == "__main__":
    sys.exit(main())

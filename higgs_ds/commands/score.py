"""`higgs-ds score`: score generated audio against reference clips and target texts (docs/EVAL.md).

    higgs-ds score --requests requests.jsonl [--output scores.json] [--sim_model WAVLM_DIR] [--asr_model WHISPER_DIR]

One request per line: {"audio": WAV, "ref_audio": WAV, "text": STR}. Writes {"rows": [...], "mean": {...}} with
one row per request in order (sim, dnsmos_ovrl/sig/bak/p808, and wer/cer with --asr_model) and each metric's mean
with a 95 % confidence interval; prints a table. Model dirs are local; nothing is fetched from a hub.
"""
import argparse
import json
import logging
import sys


def build_parser():
    p = argparse.ArgumentParser(prog="higgs-ds score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", required=True, help="JSONL of {audio, ref_audio, text} (paths relative to the file)")
    p.add_argument("--output", help="write {rows, mean, backends} as JSON here")
    add_backend_flags(p)
    return p


def add_backend_flags(p):
    """--sim_model / --asr_model / --score_device, shared with `higgs-ds evaluate --generate`."""
    p.add_argument("--sim_model", metavar="DIR",
                   help="local WavLMForXVector dir for SIM (seed-tts-eval protocol); default: resemblyzer (built in)")
    p.add_argument("--asr_model", metavar="DIR",
                   help="local Whisper dir (e.g. whisper-large-v3) for WER/CER; without it no WER is reported")
    p.add_argument("--score_device", default="cpu", help="torch device of the SIM and ASR models")


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import DataError
    from ..evaluation.scorer import Scorer, format_table
    from ..inference.requests import read_requests

    try:
        for d, flag in ((args.sim_model, "--sim_model"), (args.asr_model, "--asr_model")):
            check_model_dir(d, flag)
        requests = read_requests(args.requests)
        result = Scorer(args.sim_model, args.asr_model, args.score_device).score_requests(requests)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def check_model_dir(path, flag):
    """A --sim_model/--asr_model dir must exist locally with a config.json (never a hub id)."""
    import os

    from ..errors import DataError

    if path and not os.path.isfile(os.path.join(path, "config.json")):
        raise DataError(f"{flag} {path}: not a local model dir (no config.json there); nothing is downloaded",
                        "missing_model")


if __name__ == "__main__":
    sys.exit(main())

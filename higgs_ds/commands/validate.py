"""`higgs-ds validate`: check every sample of data files (or read a prepared dir's stored report) and print the
report (docs/DATA.md); only the text tokenizer is loaded (no model, no DeepSpeed): it starts in about a second.

    higgs-ds validate --data train.jsonl val.jsonl [--on_bad_sample skip] [--report report.json]
"""
import argparse
import json
import os

from ..config import add_flags
from ..errors import InputNotFound


def build_parser():
    v = argparse.ArgumentParser(prog="higgs-ds validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("--data", nargs="+", required=True, help="ChatML JSONL / JSON list files")
    v.add_argument("--tokenizer_path", help="text tokenizer dir or Hub repo id (org/name[@revision]; for token "
                                            "lengths); default: the embedded tiny one")
    v.add_argument("--report", help="also write the reports as JSON here")
    v.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    from ..data.validate import ValidationConfig

    add_flags(v, ValidationConfig)
    return v


def main(argv=None):
    from ..logs import setup_logging

    setup_logging()
    return validate(build_parser().parse_args(argv))


def validate(args):
    """Validate data files; only the text tokenizer is loaded (no model, no DeepSpeed): it starts in about a second."""
    from ..assets import ensure_tiny_assets
    from ..config import from_args
    from ..data.open_prepared import stored_report
    from ..data.prepared import is_prepared
    from ..data.validate import ValidationConfig, summary_text, validate_files
    from ..models.loading import load_text_tokenizer
    from ..models.locate import tokenizer_dir as resolve_tokenizer

    tokenizer_dir = resolve_tokenizer(args.tokenizer_path) or ensure_tiny_assets().model_path
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

"""`higgs-ds prepare`: validate, tokenize and encode sources once into a prepared dataset dir (docs/DATA.md).

    higgs-ds prepare --data SOURCE... --output DIR [--num_workers N]   # one prepared dataset
    higgs-ds prepare --data utts.tsv [--pair_by_speaker]   # into training's cache dir for that source (printed)
"""
import argparse

from ..config import add_flags


def build_parser():
    pr = argparse.ArgumentParser(prog="higgs-ds prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--data", nargs="+", required=True,
                    help="sources: ChatML JSONL / JSON list, manifests (TSV/CSV/JSONL with ref_audio, ref_text, "
                         "target_audio, target_text, speaker), corpora (docs/DATA.md)")
    pr.add_argument("--output", help="the prepared dataset dir (all --data sources in one); default: each source "
                                     "into the cache dir that `train.py --train_data SOURCE` uses (path printed)")
    pr.add_argument("--audio_tokenizer_path", help="audio tokenizer dir (config.json, model.pth) or Hub repo id; "
                                                  "default: the tiny one")
    pr.add_argument("--tokenizer_path", help="text tokenizer dir or Hub repo id (its tokenizer files only) of the "
                                            "prepared dataset; default: the tiny one")
    pr.add_argument("--whisper_audio", action="store_true",
                    help="for a model with the Whisper tower (encode_whisper_embed): check its audio-in clips "
                         "(user/system audio before assistant audio, <= 30 s); training does so by itself")
    pr.add_argument("--seed", type=int, default=0, help="seed of the pairs of utterance corpora (LibriTTS tree, "
                                                        "parquet, WebDataset tar, manifests without ref_audio)")
    pr.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    pr.add_argument("--num_workers", type=int, default=1, help="prepare processes on this machine (per rank)")
    pr.add_argument("--shard_size", type=int, default=256, help="samples per shard (the unit of resumption)")
    from ..data.validate import ValidationConfig

    add_flags(pr, ValidationConfig)
    from ..data.sources.config import SourceConfig

    add_flags(pr, SourceConfig)
    from ..data.pair_check import PairCheckConfig

    add_flags(pr, PairCheckConfig)
    from ..data.quality import QualityConfig

    add_flags(pr, QualityConfig)
    return pr


def main(argv=None):
    from ..logs import setup_logging

    setup_logging()
    parser = build_parser()
    return prepare(parser.parse_args(argv), parser)


def prepare(args, parser):
    from ..data.prepare import prepare_from_args
    from ..data.prepare_checks import Scorers

    _check_source_flags(args, parser)
    from ..assets import ensure_tiny_assets

    return prepare_from_args(args, ensure_tiny_assets, Scorers(_speaker_embedder, _dnsmos, _asr))


def _check_source_flags(args, parser):
    from ..config import check_ranges
    from ..data.pair_check import PairCheckConfig
    from ..data.sources.config import SourceConfig

    check_ranges(parser, args, SourceConfig, PairCheckConfig)
    lo, hi = args.min_ref_seconds, args.max_ref_seconds
    if lo is not None and hi is not None and lo > hi:
        parser.error(f"--min_ref_seconds {lo} is above --max_ref_seconds {hi}: no utterance can be a reference")


def _speaker_embedder():
    """The pair check's encoder, on this rank's GPU when there is one."""
    import torch

    from ..data.prepare import dist_env
    from ..evaluation.speaker import file_embedder

    return file_embedder(f"cuda:{dist_env()[2]}" if torch.cuda.is_available() else "cpu")


def _dnsmos():
    from ..evaluation.dnsmos import DnsmosScorer

    scorer = DnsmosScorer()
    return lambda wav: scorer.score(wav)["dnsmos_ovrl"]


def _asr(path):
    """The quality columns' ASR: Whisper from a local dir, on this rank's GPU when there is one."""
    import torch

    from ..data.prepare import dist_env
    from ..evaluation.asr import WhisperASR

    return WhisperASR.load(path, f"cuda:{dist_env()[2]}" if torch.cuda.is_available() else "cpu").score

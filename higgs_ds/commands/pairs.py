"""`higgs-ds pairs`: scored candidates -> DPO pairs, best vs worst by reward per prompt (docs/PREFERENCE.md).

    higgs-ds pairs --candidates DIR/candidates.jsonl --scores scores.json --output pairs.jsonl \\
        [--weights sim=1,wer=1,dnsmos=0.5,duration=1,stop=1] [--min_gap 0.1]

reward = sim·SIM − wer·WER/CER (with ASR scores) + dnsmos·DNSMOS OVRL − duration·|ln(duration / target duration)|
(prompts with a target) + stop·stopped. Ties and gaps below --min_gap give no pair; every prompt is counted.
"""
import argparse

from ..errors import add_debug_flag, run_entry_point


def build_parser():
    p = argparse.ArgumentParser(prog="higgs-ds pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", required=True, help="DIR/candidates.jsonl of `higgs-ds sample`")
    p.add_argument("--scores", required=True, help="`higgs-ds score --requests DIR/candidates.jsonl --output` JSON")
    p.add_argument("--output", required=True, help="pair file (JSONL) for `train.py --stage dpo --train_data`")
    p.add_argument("--weights", help="term=weight,... over sim=1,wer=1,dnsmos=0.5,duration=1,stop=1 (0: term off)")
    p.add_argument("--min_gap", type=float, default=0.0, help="drop pairs whose reward gap is below this")
    add_debug_flag(p)
    return p


def _run(argv):
    args = build_parser().parse_args(argv)
    from ..evaluation.pair_files import pairs_from_files, summary
    from ..evaluation.reward import parse_weights

    counts = pairs_from_files(args.candidates, args.scores, args.output, parse_weights(args.weights), args.min_gap)
    print(summary(counts, args.output))
    return 0


def main(argv=None):
    return run_entry_point(_run, argv)

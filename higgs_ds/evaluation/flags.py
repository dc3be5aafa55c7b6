"""Flags of generation eval during training (`higgs-ds train`), and their consistency checks."""
from .best import METRIC_KEYS


def add_generation_eval_flags(g):
    g.add_argument("--eval_generate_every", type=int, default=0,
                   help="every N optimizer steps, and once before the first (the base model's zero-shot baseline), "
                        "clone --num_eval_prompts validation prompts with the live model and log eval_gen/sim, "
                        "eval_gen/dnsmos_ovrl, eval_gen/wer (with --asr_model) and their change since the baseline "
                        "(docs/EVAL.md; 0: off)")
    g.add_argument("--num_eval_prompts", type=int, default=8,
                   help="held-out prompts of generation eval (the first ones of --val_data), spread over ranks")
    g.add_argument("--eval_max_new_tokens", type=int, default=512, help="generation budget of each eval prompt")
    g.add_argument("--keep_best", choices=sorted(METRIC_KEYS),
                   help="keep the adapter of the best evaluation so far in output_dir/best/ (sim, dnsmos: highest, "
                        "wer: lowest, from generation eval; loss: lowest eval loss/total from --eval_every)")
    g.add_argument("--sim_model", metavar="DIR",
                   help="local WavLMForXVector dir for eval_gen/sim; default: resemblyzer (built in)")
    g.add_argument("--asr_model", metavar="DIR",
                   help="local Whisper dir for eval_gen/wer and eval_gen/cer; without it no WER is logged")


def check_generation_eval_flags(args, parser):
    """parser.error (one message, exit 2) on inconsistent flags."""
    if args.eval_generate_every < 0 or args.num_eval_prompts < 1:
        parser.error("--eval_generate_every must be >= 0 and --num_eval_prompts >= 1")
    if args.keep_best in ("sim", "dnsmos", "wer") and args.eval_generate_every == 0:
        parser.error(f"--keep_best {args.keep_best} needs --eval_generate_every N")
    if args.keep_best == "wer" and not args.asr_model:
        parser.error("--keep_best wer needs --asr_model DIR (there is no WER without an ASR model)")
    if args.keep_best == "loss" and args.eval_every == 0:
        parser.error("--keep_best loss needs --eval_every N")

"""Command-line flags of `higgs_ds/train.py` (`higgs-ds train`). Every flag is documented in docs/FLAGS.md."""
import argparse
import os

from .config import add_flags, check_ranges

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_classes():
    """Every component config whose fields are flags of train.py (docs/FLAGS.md), in flag-group order."""
    from .data.config import DataConfig
    from .data.validate import ValidationConfig
    from .engine.activation_checkpointing import ActivationCheckpointingConfig
    from .engine.checkpoint import CheckpointConfig
    from .engine.metrics import MetricsConfig
    from .evaluation.config import EvalConfig, GenerationEvalConfig
    from .loss import LossConfig
    from .loss.preference import PreferenceConfig
    from .models.finetune import AdapterConfig

    return dict(data=(DataConfig, ValidationConfig), metrics=(MetricsConfig,), eval=(EvalConfig,),
                generation_eval=(GenerationEvalConfig,),
                activation_checkpointing=(ActivationCheckpointingConfig,), checkpoints=(CheckpointConfig,),
                loss=(LossConfig,), preference=(PreferenceConfig,), lora=(AdapterConfig,))


def build_parser():
    cfg = config_classes()
    p = argparse.ArgumentParser(prog="higgs-ds train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model_path", help="HiggsAudioModel dir (config.json, weights, tokenizer) or Hub id ORG/NAME[@REV] "
                   "(official repo: pinned boson revision; transformers-native dirs are converted once, docs/INTEROP.md); "
                   "default: embedded tiny model")
    g.add_argument("--audio_tokenizer_path", help="audio tokenizer dir (config.json, model.pth) or Hub id ORG/NAME[@REV]; "
                   "default: the official tokenizer repo with the official model repo, else the embedded tiny one")
    g.add_argument("--tokenizer_path", help="text tokenizer dir or Hub repo id (its tokenizer files only); default: "
                                            "--model_path")
    g.add_argument("--whisper_processor_path", metavar="DIR",
                   help="local WhisperProcessor dir (save_pretrained), required when the model config has "
                        "encode_whisper_embed (Whisper audio tower; the release has it off); never fetched from the hub")
    g = p.add_argument_group("data")
    for c in cfg["data"]:
        add_flags(g, c)
    g.add_argument("--create_sample_data", metavar="DIR", help="write a synthetic voice-cloning dataset to DIR and exit")
    g.add_argument("--num_sample_data", type=int, default=32, help="samples written by --create_sample_data")
    g.add_argument("--validate_data_only", action="store_true",
                   help="check every sample (schema, audio, lengths; docs/DATA.md), print the report and exit")
    g = p.add_argument_group("training")
    g.add_argument("--stage", default="sft", choices=("sft", "dpo"),
                   help="sft: supervised fine-tuning on voice-cloning samples; dpo: preference optimisation on pairs "
                        "(a 'rejected' audio per sample; docs/PREFERENCE.md)")
    g.add_argument("--batch_size", type=int, default=2, help="micro batch per rank (fills train_micro_batch_size_per_gpu)")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--learning_rate", type=float, default=1e-4, help="peak LR (fills optimizer.params.lr)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (fills optimizer.params.weight_decay)")
    g.add_argument("--warmup_ratio", type=float, default=0.05, help="fraction of steps for linear warmup")
    g.add_argument("--num_epochs", type=int, default=1, help="passes over the training set")
    g.add_argument("--max_steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs decide)")
    g.add_argument("--seed", type=int, default=42, help="seed of LoRA init and of the data order")
    g.add_argument("--quick_test", action="store_true", help="smoke run: at most 8 samples and 4 steps")
    g.add_argument("--output_dir", default=os.path.join("outputs", "run"), help="adapter, metrics.json and logs go here")
    g.add_argument("--stop_after_steps", type=int, default=0,
                   help="exit after this many optimizer steps in this process, keeping the LR schedule of the full "
                        "run, and checkpoint there when --save_every > 0 (time-boxed jobs; 0: off)")
    g.add_argument("--max_consecutive_skips", type=int, default=10,
                   help="an optimizer step whose loss or gradient is NaN/inf is skipped (weights and optimizer state "
                        "unchanged, counted as train/skipped_steps); abort after this many in a row (0: never)")
    for c in cfg["metrics"] + cfg["eval"] + cfg["activation_checkpointing"]:
        add_flags(g, c)
    add_flags(p.add_argument_group("generation eval (docs/EVAL.md)"), *cfg["generation_eval"])
    add_flags(p.add_argument_group("checkpoints"), *cfg["checkpoints"])
    add_flags(p.add_argument_group("loss (docs/LOSS.md)"), *cfg["loss"])
    add_flags(p.add_argument_group("preference optimisation, --stage dpo (docs/PREFERENCE.md)"), *cfg["preference"])
    add_flags(p.add_argument_group("LoRA"), *cfg["lora"])
    g = p.add_argument_group("DeepSpeed")
    g.add_argument("--deepspeed", help="DeepSpeed JSON config; default ds_configs/zero2.json on GPU, cpu_zero2.json on CPU")
    g.add_argument("--dist_timeout_minutes", type=float, default=30.0,
                   help="timeout of every collective (torch.distributed process group): a rank waiting longer for a "
                        "dead or stuck peer raises instead of hanging")
    g.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    p.add_argument_group("diagnostics").add_argument(
        "--debug", action="store_true", help="show the Python traceback of a user error (bad data, path, flag or "
                                             "config) instead of the one-line message (docs/ERRORS.md)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    args.explicit = {a for a in (argv if argv is not None else __import__("sys").argv[1:]) if a.startswith("--")}
    args.explicit = {a.split("=")[0] for a in args.explicit}
    for name in ("batch_size", "gradient_accumulation_steps", "num_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    for name in ("stop_after_steps", "max_consecutive_skips"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    check_ranges(p, args, *[c for group in config_classes().values() for c in group])
    if args.stage == "dpo" and args.reference == "adapter" and args.finetune == "full":
        p.error("--reference adapter needs an adapter (--finetune lora or audio); --finetune full: --reference stored")
    if args.dist_timeout_minutes <= 0:
        p.error("--dist_timeout_minutes must be > 0")
    if args.num_workers is None:
        from .data.config import default_num_workers

        args.num_workers = default_num_workers()
    if args.learning_rate <= 0:
        p.error("--learning_rate must be > 0")
    from .config import from_args
    from .evaluation.config import GenerationEvalConfig, check_generation_eval

    check_generation_eval(from_args(GenerationEvalConfig, args), args.eval_every, p)
    if args.quick_test:
        args.max_steps = 4 if args.max_steps < 0 else min(args.max_steps, 4)
    return args


def default_ds_config(accelerator):
    name = "cpu_zero2.json" if accelerator == "cpu" else "zero2.json"
    return os.path.join(ROOT, "ds_configs", name)


def flags_markdown():
    """docs/FLAGS.md: `python -m higgs_ds.args > docs/FLAGS.md`."""
    lines = ["# Flags of `higgs_ds/train.py`", "", "Generated by `python -m higgs_ds.args > docs/FLAGS.md`; "
             "`tests/tools/test_flags_doc.py` fails when a flag is missing here.", ""]
    for group in build_parser()._action_groups:
        acts = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not acts:
            continue
        lines += [f"## {group.title}", "", "| flag | default | description |", "|---|---|---|"]
        for a in acts:
            flag = a.option_strings[-1] + (" {" + ",".join(map(str, a.choices)) + "}" if a.choices else "")
            hidden = a.default is None or a.default is False or a.default == [] or a.default == argparse.SUPPRESS
            default = "" if hidden else f"`{a.default}`"
            lines.append(f"| `{flag}` | {default} | {(a.help or '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(flags_markdown())

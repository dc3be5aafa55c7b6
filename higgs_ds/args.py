"""Command-line flags of `higgs_ds/train.py` (`higgs-ds train`). Every flag is documented in docs/FLAGS.md."""
import argparse
import os

from .models.lora import LORA_PRESETS, MODULES_TO_SAVE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_validation_flags(g):
    """Flags of data validation (docs/DATA.md), shared by `higgs-ds train` and `higgs-ds validate`."""
    g.add_argument("--on_bad_sample", choices=("fail", "skip"), default="fail",
                   help="fail: stop after listing every bad sample; skip: use the good ones (bad ones are "
                        "counted and listed in the log)")
    g.add_argument("--min_audio_seconds", type=float, default=0.1, help="shorter audio clips are bad samples")
    g.add_argument("--max_audio_seconds", type=float, default=60.0, help="longer audio clips are bad samples")
    g.add_argument("--max_tokens", type=int, default=8192,
                   help="longest sample in tokens (text tokens + audio frames at 25 Hz); longer ones are bad samples")


def add_checkpointing_flags(g):
    """Activation checkpointing flags, shared by `higgs-ds train` and `higgs-ds plan`."""
    g.add_argument("--activation_checkpointing", choices=("off", "all", "every_k"), default="off",
                   help="recompute decoder-layer activations in the backward: all layers, or every k-th (less "
                        "memory, ~1/3 more compute per checkpointed layer)")
    g.add_argument("--checkpoint_every_k", type=int, default=2,
                   help="with --activation_checkpointing every_k: checkpoint layers 0, k, 2k, ...")


def add_lora_flags(g):
    """LoRA flags, shared by `higgs-ds train` and `higgs-ds plan`."""
    g.add_argument("--lora_r", type=int, default=16, help="LoRA rank")
    g.add_argument("--lora_alpha", type=int, default=32, help="LoRA scaling numerator (scale = alpha / r)")
    g.add_argument("--lora_dropout", type=float, default=0.0, help="dropout on the LoRA input")
    g.add_argument("--lora_preset", choices=sorted(LORA_PRESETS), default="attn_mlp_audio",
                   help="which linear layers get adapters")
    g.add_argument("--lora_target_modules", nargs="+", help="explicit module-name suffixes (overrides --lora_preset)")
    g.add_argument("--modules_to_save", nargs="+", choices=sorted(MODULES_TO_SAVE), default=[],
                   help="train these modules in full and store them in the adapter: audio_head "
                        "(audio_decoder_proj.audio_lm_head), audio_embeddings (audio_codebook_embeddings), "
                        "text_head (audio_decoder_proj.text_lm_head, vocab x hidden: large)")


def build_parser():
    p = argparse.ArgumentParser(prog="higgs-ds train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model_path", help="HiggsAudioModel dir (config.json, weights, tokenizer); default: embedded tiny model")
    g.add_argument("--audio_tokenizer_path", help="audio tokenizer dir (config.json, model.pth); default: embedded tiny one")
    g.add_argument("--tokenizer_path", help="text tokenizer dir; default: --model_path")
    g.add_argument("--whisper_processor_path", metavar="DIR",
                   help="local WhisperProcessor dir (save_pretrained), required when the model config has "
                        "encode_whisper_embed (Whisper audio tower; the release has it off); never fetched from the hub")
    g = p.add_argument_group("data")
    g.add_argument("--train_data", help="ChatML JSONL / JSON list, or a prepared dir (`higgs-ds prepare --output DIR`); "
                                        "default: the embedded synthetic set")
    g.add_argument("--val_data", help="validation ChatML or prepared dir; default: the embedded set's val split when "
                                      "--train_data is unset")
    g.add_argument("--create_sample_data", metavar="DIR", help="write a synthetic voice-cloning dataset to DIR and exit")
    g.add_argument("--num_sample_data", type=int, default=32, help="samples written by --create_sample_data")
    g.add_argument("--validate_data_only", action="store_true",
                   help="check every sample (schema, audio, lengths; docs/DATA.md), print the report and exit")
    add_validation_flags(g)
    g.add_argument("--code_cache_dir", help="audio-code cache (filled by `higgs-ds prepare`); default "
                                            "$HIGGS_DS_CACHE/codes/<audio tokenizer id>/. Misses are encoded on the fly")
    g.add_argument("--no_code_cache", action="store_true", help="encode all audio on the fly; ignore the code cache")
    g.add_argument("--auto_prepare", action="store_true",  # issue 14
                   help="prepare a ChatML --train_data/--val_data once into $HIGGS_DS_CACHE/prepared/ (keyed by path, "
                        "size, mtime, tokenizers, limits; rank 0 prepares, the others wait) and train on the prepared "
                        "copy; later starts reuse it (docs/DATA.md)")
    g.add_argument("--max_tokens_per_batch", type=int, default=0,
                   help="token-budget batching: length-bucketed micro-batches of at most this many padded tokens "
                        "(replaces --batch_size for training; 0: fixed --batch_size)")
    g.add_argument("--num_workers", type=int,
                   help="DataLoader worker processes per rank (persistent; 0: load in the training process); "
                        "default 2 with CUDA, 0 on CPU. Pinned memory is used on CUDA")
    g = p.add_argument_group("training")
    g.add_argument("--batch_size", type=int, default=2, help="micro batch per rank (fills train_micro_batch_size_per_gpu)")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--learning_rate", type=float, default=1e-4, help="peak LR (fills optimizer.params.lr)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (fills optimizer.params.weight_decay)")
    g.add_argument("--warmup_ratio", type=float, default=0.05, help="fraction of steps for linear warmup")
    g.add_argument("--num_epochs", type=int, default=1, help="passes over the training set")
    g.add_argument("--max_steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs decide)")
    g.add_argument("--seed", type=int, default=42, help="seed of LoRA init and of the data order")
    g.add_argument("--quick_test", action="store_true", help="smoke run: at most 8 samples and 4 steps")
    g.add_argument("--log_every", type=int, default=1, help="log a line every N optimizer steps")
    g.add_argument("--eval_every", type=int, default=0,
                   help="evaluate on the validation set every N optimizer steps (TensorBoard eval/...; 0: only at the end)")
    g.add_argument("--tensorboard_dir", help="TensorBoard event dir (rank 0); default output_dir/tensorboard; 'none': off")
    g.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--output_dir", default=os.path.join("outputs", "run"), help="adapter, metrics.json and logs go here")
    add_checkpointing_flags(g)
    g.add_argument("--sample_every", type=int, default=0,
                   help="every N optimizer steps rank 0 clones --num_preview_prompts validation prompts with the "
                        "serve engine and writes audio + spectrograms to TensorBoard (0: off)")
    g.add_argument("--num_preview_prompts", type=int, default=2, help="validation prompts per audio preview")
    g.add_argument("--preview_max_new_tokens", type=int, default=512, help="generation budget of each preview")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save_every", type=int, default=0,
                   help="save a resumable checkpoint to output_dir/checkpoints/step<N> every N optimizer steps (0: never)")
    g.add_argument("--keep_last", type=int, default=3, help="keep only the newest K complete checkpoints (0: keep all)")
    g.add_argument("--resume", metavar="auto|PATH",
                   help="auto: continue from the checkpoint output_dir/checkpoints/latest names, else the newest "
                        "complete one (fresh start if none); PATH: a step<N> dir, a checkpoints/ dir or an output dir. "
                        "Another number of ranks resumes through DeepSpeed's universal checkpoint (docs/CHECKPOINTS.md)")
    g.add_argument("--stop_after_steps", type=int, default=0,
                   help="exit after this many optimizer steps in this process, keeping the LR schedule of the full "
                        "run, and checkpoint there when --save_every > 0 (time-boxed jobs; 0: off)")
    g.add_argument("--max_consecutive_skips", type=int, default=10,
                   help="an optimizer step whose loss or gradient is NaN/inf is skipped (weights and optimizer state "
                        "unchanged, counted as train/skipped_steps); abort after this many in a row (0: never)")
    g = p.add_argument_group("loss (docs/LOSS.md)")
    g.add_argument("--text_loss_weight", type=float, default=1.0, help="weight of the text CE term")
    g.add_argument("--audio_loss_weight", type=float, default=1.0, help="weight of the audio CE term")
    g.add_argument("--codebook_weights", type=float, nargs="+", help="one weight per codebook (rescaled to mean 1)")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing of both CE terms")
    g.add_argument("--z_loss", type=float, default=0.0, help="coefficient of logsumexp^2 per labeled target")
    g.add_argument("--loss_normalization", choices=("global", "local"), default="global",
                   help="global: divide by the labeled-token count of the whole optimizer step over all ranks "
                        "(exact under accumulation and data parallelism); local: per micro-batch mean")
    add_lora_flags(p.add_argument_group("LoRA"))
    g = p.add_argument_group("DeepSpeed")
    g.add_argument("--deepspeed", help="DeepSpeed JSON config; default ds_configs/zero2.json on GPU, cpu_zero2.json on CPU")
    g.add_argument("--dist_timeout_minutes", type=float, default=30.0,
                   help="timeout of every collective (torch.distributed process group): a rank waiting longer for a "
                        "dead or stuck peer raises instead of hanging")
    g.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    args.explicit = {a for a in (argv if argv is not None else __import__("sys").argv[1:]) if a.startswith("--")}
    args.explicit = {a.split("=")[0] for a in args.explicit}
    for name in ("batch_size", "gradient_accumulation_steps", "num_epochs", "lora_r", "log_every", "checkpoint_every_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    for name in ("save_every", "keep_last", "stop_after_steps", "eval_every", "max_consecutive_skips"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    if args.dist_timeout_minutes <= 0:
        p.error("--dist_timeout_minutes must be > 0")
    if args.num_workers is None:
        from .data.loaders import default_num_workers

        args.num_workers = default_num_workers()
    elif args.num_workers < 0:
        p.error("--num_workers must be >= 0")
    if args.learning_rate <= 0:
        p.error("--learning_rate must be > 0")
    if args.quick_test:
        args.max_steps = 4 if args.max_steps < 0 else min(args.max_steps, 4)
    return args


def default_ds_config(accelerator):
    name = "cpu_zero2.json" if accelerator == "cpu" else "zero2.json"
    return os.path.join(ROOT, "ds_configs", name)


def flags_markdown():
    """docs/FLAGS.md: `python -m higgs_ds.args > docs/FLAGS.md`."""
    lines = ["# Flags of `higgs_ds/train.py`", "", "Generated by `python -m higgs_ds.args > docs/FLAGS.md`; "
             "`tests/test_flags_doc.py` fails when a flag is missing here.", ""]
    for group in build_parser()._action_groups:
        acts = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not acts:
            continue
        lines += [f"## {group.title}", "", "| flag | default | description |", "|---|---|---|"]
        for a in acts:
            flag = a.option_strings[-1] + (" {" + ",".join(map(str, a.choices)) + "}" if a.choices else "")
            default = "" if a.default is None or a.default is False or a.default == [] else f"`{a.default}`"
            lines.append(f"| `{flag}` | {default} | {(a.help or '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(flags_markdown())

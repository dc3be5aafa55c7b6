"""`higgs-ds evaluate`: teacher-forced loss and per-codebook accuracy of a model (+ adapter) on a data set.

Prints a table and writes JSON. Numbers are token-weighted over the whole set (not means of batch means).
"""
import argparse
import json
import logging

from ..errors import add_debug_flag

log = logging.getLogger(__name__)


def evaluate_dataset(model, dataset, batch_size=4):
    """Token-weighted text/audio loss and per-codebook audio accuracy (teacher forcing): the evaluation train.py
    runs (higgs_ds/evaluation/teacher_forced.py), in this command's JSON layout."""
    from ..evaluation.teacher_forced import teacher_forced_eval

    r = teacher_forced_eval(model, dataset, batch_size)
    k = model.config.audio_num_codebooks
    return {"samples": r["samples"], "text_tokens": r["tokens/text"], "audio_tokens": r["tokens/audio"],
            "loss_text": r["loss/text"], "loss_audio": r["loss/audio"],
            "loss_audio_cb": [r[f"loss/audio_cb{c}"] for c in range(k)],
            "acc_audio_cb": [r[f"acc/audio_cb{c}"] for c in range(k)]}


def placement(device=None, dtype=None):
    """(torch.device, torch.dtype) of the evaluated model: the GPU when there is one, in bf16 (the training dtype of
    the GPU DeepSpeed configs), else the CPU in fp32; --device / --dtype override."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return torch.device(device), getattr(torch, dtype)


def format_table(r):
    lines = [f"samples {r['samples']}  text tokens {r['text_tokens']}  audio tokens {r['audio_tokens']}",
             f"loss text {r['loss_text']:.4f}  loss audio {r['loss_audio']:.4f}", "codebook  loss    acc"]
    lines += [f"{c:>8}  {l:.4f}  {a:.3f}" for c, (l, a) in enumerate(zip(r["loss_audio_cb"], r["acc_audio_cb"]))]
    return "\n".join(lines)


def add_generate_flags(p):
    from .score import add_backend_flags

    p.add_argument("--generate", action="store_true",
                   help="also clone --num_prompts prompts of --data with the adapter and with its base model and "
                        "print SIM, WER (with --asr_model), DNSMOS, mean ± 95%% CI, per speaker (docs/EVAL.md)")
    p.add_argument("--num_prompts", type=int, default=16, help="prompts cloned by --generate (the first ones)")
    p.add_argument("--max_new_tokens", type=int, default=1024, help="generation budget of each --generate prompt")
    add_backend_flags(p)


def generation_eval(model, paths, args, samples):
    """--generate on `samples` (`SourcedSample`s: the evaluated set's): the systems' rows, means and per-speaker
    means; prints the table."""
    from ..evaluation.compare import format_generation_table, generate_systems, summarize_systems
    from ..evaluation.prompts import eval_prompts
    from ..evaluation.scorer import Scorer

    scorer = Scorer(args.sim_model, args.asr_model, args.score_device)
    prompts = eval_prompts(samples, args.num_prompts)
    summary = summarize_systems(generate_systems(model, paths, prompts, scorer, args.max_new_tokens))
    print(format_generation_table(summary, asr=scorer.asr is not None))
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="higgs-ds evaluate", description=__doc__)
    p.add_argument("--data", required=True, help="a source (ChatML JSONL / JSON list, a manifest, a corpus), prepared "
                                                 "once into the cache as training does, or a prepared dir")
    p.add_argument("--model_path", help="model dir (default: the adapter's base, or the embedded tiny model)")
    p.add_argument("--audio_tokenizer_path")
    p.add_argument("--adapter", help="adapter dir or training output dir")
    p.add_argument("--whisper_processor_path", help="local WhisperProcessor dir (models with the Whisper tower)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", help="where the model runs (cuda, cuda:1, cpu); default: the GPU when there is one")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="model dtype; default bfloat16 on a GPU (the training dtype), float32 on the CPU")
    p.add_argument("--output", help="write the results as JSON here")
    add_generate_flags(p)
    add_debug_flag(p)
    args = p.parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    from ..assets import resolve_model_paths
    from ..data.training_set import open_training_set
    from ..inference.export import base_model_path, find_adapter
    from ..models.loading import load_all, load_whisper_processor

    adapter = find_adapter(args.adapter) if args.adapter else None
    model_path = args.model_path or (base_model_path(adapter) if adapter else None)
    paths = resolve_model_paths(model_path, args.audio_tokenizer_path)
    whisper = load_whisper_processor(paths.model_path, args.whisper_processor_path)
    device, dtype = placement(args.device, args.dtype)
    model, tok, audio_tok = load_all(paths, dtype, str(device))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model = model.to(device)
    dataset = open_training_set(args.data, tok, paths.tokenizer_path, paths.audio_tokenizer_path,
                                whisper_processor=whisper)
    log.info("evaluating on %s in %s", device, str(dtype).replace("torch.", ""))
    result = evaluate_dataset(model, dataset, args.batch_size)
    print(format_table(result))
    if args.generate:
        result["generate"] = generation_eval(model, paths, args, dataset.samples)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0

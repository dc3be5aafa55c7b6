"""`higgs-ds evaluate`: teacher-forced loss and per-codebook accuracy of a model (+ adapter) on a data set.

Prints a table and writes JSON. Numbers are token-weighted over the whole set (not means of batch means).
"""
import argparse
import json
import logging

import torch

from ..errors import add_debug_flag

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_dataset(model, dataset, batch_size=4):
    """Token-weighted text/audio loss and per-codebook audio accuracy (teacher forcing)."""
    from torch.utils.data import DataLoader

    from ..data.collate import TrainingCollator
    from ..loss import LossConfig, compute_loss

    model.eval()
    k = model.config.audio_num_codebooks
    sums = {"text_ce": 0.0, "text_n": 0, "audio_ce": 0.0, "audio_n": 0, "cb_ce": [0.0] * k, "cb_correct": [0.0] * k}
    collate = TrainingCollator(model.config, getattr(dataset, "whisper_processor", None))
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        m = compute_loss(model, batch, LossConfig()).metrics
        n_t, n_a = int(m["tokens/text"]), int(m["tokens/audio"])
        sums["text_ce"] += float(m["loss/text"]) * n_t
        sums["text_n"] += n_t
        sums["audio_ce"] += float(m["loss/audio"]) * n_a
        sums["audio_n"] += n_a
        for c in range(k):  # codebooks are labeled at the same columns, n_a / k each
            sums["cb_ce"][c] += float(m[f"loss/audio_cb{c}"]) * n_a / k
            sums["cb_correct"][c] += float(m[f"acc/audio_cb{c}"]) * n_a / k
    per_cb = max(sums["audio_n"] / k, 1)
    return {"samples": len(dataset), "text_tokens": sums["text_n"], "audio_tokens": sums["audio_n"],
            "loss_text": sums["text_ce"] / max(sums["text_n"], 1), "loss_audio": sums["audio_ce"] / max(sums["audio_n"], 1),
            "loss_audio_cb": [x / per_cb for x in sums["cb_ce"]], "acc_audio_cb": [x / per_cb for x in sums["cb_correct"]]}


def format_table(r):
    lines = [f"samples {r['samples']}  text tokens {r['text_tokens']}  audio tokens {r['audio_tokens']}",
             f"loss text {r['loss_text']:.4f}  loss audio {r['loss_audio']:.4f}", "codebook  loss    acc"]
    lines += [f"{c:>8}  {l:.4f}  {a:.3f}" for c, (l, a) in enumerate(zip(r["loss_audio_cb"], r["acc_audio_cb"]))]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="higgs-ds evaluate", description=__doc__)
    p.add_argument("--data", required=True, help="ChatML JSONL / JSON list")
    p.add_argument("--model_path", help="model dir (default: the adapter's base, or the embedded tiny model)")
    p.add_argument("--audio_tokenizer_path")
    p.add_argument("--adapter", help="adapter dir or training output dir")
    p.add_argument("--whisper_processor_path", help="local WhisperProcessor dir (models with the Whisper tower)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--output", help="write the results as JSON here")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    from ..assets import resolve_model_paths
    from ..data.loaders import load_dataset
    from ..models.loading import load_all, load_whisper_processor
    from .export import base_model_path, find_adapter

    adapter = find_adapter(args.adapter) if args.adapter else None
    model_path = args.model_path or (base_model_path(adapter) if adapter else None)
    paths = resolve_model_paths(model_path, args.audio_tokenizer_path)
    whisper = load_whisper_processor(paths.model_path, args.whisper_processor_path)
    model, tok, audio_tok = load_all(paths)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    result = evaluate_dataset(model, load_dataset(args.data, tok, audio_tok, whisper_processor=whisper), args.batch_size)
    print(format_table(result))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0

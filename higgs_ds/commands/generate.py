"""`higgs-ds generate`: zero-shot voice cloning through the official `HiggsAudioServeEngine`.

Works with a merged model dir, or a base model dir + `--adapter` (merged in memory). Greedy with
`--temperature 0` (repetition-aware resampling off, so output is deterministic), else sampled with
temperature / top-k / top-p / seed. Writes one wav per request.
"""
import argparse
import logging
import os

import numpy as np

from ..errors import add_debug_flag
from ..inference.generate import clone, load_engine
from ..inference.requests import GENERATE_FIELDS, read_requests

log = logging.getLogger(__name__)


def main(argv=None):
    p = argparse.ArgumentParser(prog="higgs-ds generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="merged model dir, or the base model with --adapter")
    p.add_argument("--audio_tokenizer_path", required=True)
    p.add_argument("--adapter", help="adapter dir (or training output dir) merged in memory")
    p.add_argument("--ref_audio", help="reference clip of the voice")
    p.add_argument("--ref_text", help="transcript of the reference clip")
    p.add_argument("--text", help="what to say")
    p.add_argument("--requests", help="JSONL of {ref_audio, ref_text, text[, output]} instead of the three above")
    p.add_argument("--output_dir", default="generated")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int)
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument("--device", choices=("cpu", "cuda"))
    add_debug_flag(p)
    args = p.parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    if args.requests:
        requests = read_requests(args.requests, GENERATE_FIELDS, ("ref_audio",))
    elif args.ref_audio and args.ref_text and args.text:
        requests = [dict(ref_audio=args.ref_audio, ref_text=args.ref_text, text=args.text)]
    else:
        p.error("give --ref_audio, --ref_text and --text, or --requests")
    for i, r in enumerate(requests):
        if not os.path.isfile(r["ref_audio"]):
            p.error(f"request {i + 1}: reference audio not found: {r['ref_audio']}")
    import soundfile as sf

    from ..models.loading import ModelPaths

    ModelPaths.resolve(args.model_path, args.audio_tokenizer_path)  # missing dirs: one clear message (exit 66)
    engine = load_engine(args.model_path, args.audio_tokenizer_path, args.adapter, args.device)
    os.makedirs(args.output_dir, exist_ok=True)
    for i, r in enumerate(requests):
        resp = clone(engine, r["ref_audio"], r["ref_text"], r["text"], args.temperature, args.top_k, args.top_p,
                     args.seed, args.max_new_tokens)
        out = r.get("output") or os.path.join(args.output_dir, f"{i:04d}.wav")
        if resp.audio is None:
            log.warning("request %d: the model produced no audio (text: %r)", i + 1, resp.generated_text)
            continue
        sf.write(out, np.asarray(resp.audio, dtype=np.float32), resp.sampling_rate)
        log.info("wrote %s (%.2f s)", out, len(resp.audio) / resp.sampling_rate)
    return 0

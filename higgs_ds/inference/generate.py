"""`higgs-ds generate`: zero-shot voice cloning through the official `HiggsAudioServeEngine`.

Works with a merged model dir, or a base model dir + `--adapter` (merged in memory). Greedy with
`--temperature 0` (repetition-aware resampling off, so output is deterministic), else sampled with
temperature / top-k / top-p / seed. Writes one wav per request.
"""
import argparse
import logging
import os

import numpy as np
import torch

from ..constants import SYSTEM_PROMPT
from ..errors import add_debug_flag

log = logging.getLogger(__name__)


def serve_engine(model_path, audio_tokenizer_path, tokenizer_path=None, device=None, model=None,
                 kv_cache_lengths=(1024, 4096, 8192)):
    """A `HiggsAudioServeEngine`, audio tokenizer loaded offline; `model` replaces the one it would load.

    The model is in place before the engine captures its CUDA graphs. Weights keep their checkpoint dtype
    (`torch_dtype="auto"`): boson's graph capture builds its inputs in `config.torch_dtype`, so a model cast
    to another dtype than its config says fails on CUDA.
    """
    from unittest import mock

    from boson_multimodal.serve import serve_engine as se

    from ..models.audio_tokenizer import serve_engine_audio_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    load = (lambda *a, **k: model) if model is not None else se.HiggsAudioModel.from_pretrained
    with mock.patch.object(se.HiggsAudioModel, "from_pretrained", load), serve_engine_audio_tokenizer():
        return se.HiggsAudioServeEngine(model_path, audio_tokenizer_path, tokenizer_path, device=device,
                                        torch_dtype="auto", kv_cache_lengths=list(kv_cache_lengths))


def load_engine(model_path, audio_tokenizer_path, adapter=None, device=None):
    """The serve engine on a merged model dir, or on a base model with `adapter` merged in memory first."""
    from ..models import sources  # Hub ids and native dirs -> local boson dirs

    model_path, audio_tokenizer_path = sources.model_dir(model_path), sources.audio_tokenizer_dir(audio_tokenizer_path)
    model = None
    if adapter:
        from .export import find_adapter, load_lora_model

        model = load_lora_model(find_adapter(adapter), model_path, "auto")[0].merge_and_unload().eval()
    return serve_engine(model_path, audio_tokenizer_path, device=device, model=model)


def cloning_prompt(ref_audio, ref_text, text, system=SYSTEM_PROMPT):
    """The first four messages of the training sample: what the model sees before it speaks."""
    from boson_multimodal.data_types import AudioContent, ChatMLSample, Message

    return ChatMLSample(messages=[
        Message(role="system", content=system), Message(role="user", content=ref_text),
        Message(role="assistant", content=AudioContent(audio_url=ref_audio)), Message(role="user", content=text)])


def clone(engine, ref_audio, ref_text, text, temperature=0.0, top_k=None, top_p=0.95, seed=None,
          max_new_tokens=1024, force_audio_gen=False):
    """Generate speech for `text` in the voice of `ref_audio`; returns the serve engine's `HiggsAudioResponse`.
    `force_audio_gen`: start the answer with the audio stream (never a text reply)."""
    greedy = temperature == 0.0
    return engine.generate(cloning_prompt(ref_audio, ref_text, text), max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           ras_win_len=None if greedy else 7, force_audio_gen=force_audio_gen)


def generated_codes(response):
    """(codebooks, frames) codes of the first generated clip, delay pattern reverted, BOS/EOS removed."""
    from boson_multimodal.model.higgs_audio.utils import revert_delay_pattern

    codes = torch.as_tensor(response.generated_audio_tokens)
    if codes.numel() == 0:
        return codes
    return revert_delay_pattern(codes)[:, 1:-1]


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
        from .requests import GENERATE_FIELDS, read_requests

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

"""Zero-shot voice cloning through the official `HiggsAudioServeEngine` (`higgs-ds generate`: commands/generate.py):
the engine around a model dir (an adapter merged in memory, or the live training model), the cloning prompt, one
clone, its codes. Greedy with temperature 0 (repetition-aware resampling off, so output is deterministic), else
sampled with temperature / top-k / top-p / seed.
"""
import logging

import torch

from ..constants import SYSTEM_PROMPT

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
    from ..models import locate  # Hub ids and native dirs -> local boson dirs

    model_path, audio_tokenizer_path = locate.model_dir(model_path), locate.audio_tokenizer_dir(audio_tokenizer_path)
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
    `force_audio_gen`: the answer is one clip: it starts with the audio stream (never a text reply) and ends with it
    (`<|audio_eos|>` stops the generation; the text the model would write after it is never sampled)."""
    greedy = temperature == 0.0
    stops = ["<|end_of_text|>", "<|eot_id|>"] + (["<|audio_eos|>"] if force_audio_gen else [])
    return engine.generate(cloning_prompt(ref_audio, ref_text, text), max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           ras_win_len=None if greedy else 7, force_audio_gen=force_audio_gen, stop_strings=stops)


def generated_codes(response):
    """(codebooks, frames) codes of the first generated clip, delay pattern reverted, BOS/EOS removed."""
    from boson_multimodal.model.higgs_audio.utils import revert_delay_pattern

    codes = torch.as_tensor(response.generated_audio_tokens)
    if codes.numel() == 0:
        return codes
    return revert_delay_pattern(codes)[:, 1:-1]



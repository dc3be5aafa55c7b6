"""Held-out cloning prompts for generation eval: a ChatML sample cut before its target (what the model sees),
with the reference clip (for SIM), the target text (for WER) and the speaker; and generating + scoring them."""
import dataclasses
import logging

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalPrompt:
    prompt: object  # ChatMLSample: messages before start_index
    ref_audio: str  # the last audio clip in the prompt (the voice to clone)
    text: str  # the last user text in the prompt (what to say)
    speaker: str
    sample_id: str
    language: str = None  # the sample's tag; None: Whisper detects it
    ref_text: str = None  # the reference clip's transcript (the first user text), for the speaking rate
    target_seconds: float = None  # the sample's target clip duration, when it has one


def _contents(message):
    return message.content if isinstance(message.content, list) else [message.content]


def eval_prompt(sourced):
    """EvalPrompt of a `SourcedSample`, or None when its prompt has no reference audio or no text."""
    from boson_multimodal.data_types import AudioContent, TextContent

    from ..inference.preview import prompt_of

    prompt = prompt_of(sourced.sample)
    audio = [c.audio_url for m in prompt.messages for c in _contents(m) if isinstance(c, AudioContent)]
    texts = [c if isinstance(c, str) else c.text for m in prompt.messages if m.role == "user"
             for c in _contents(m) if isinstance(c, (str, TextContent))]
    if not audio or not texts:
        return None
    return EvalPrompt(prompt, audio[-1], texts[-1], sourced.sample.speaker or "unknown", sourced.sample_id,
                      sourced.language, texts[0] if len(texts) > 1 else None,
                      _target_seconds(sourced, len(prompt.messages)))


def _target_seconds(sourced, start):
    """Duration of the sample's target clip (the last assistant audio after the prompt), None without one."""
    from boson_multimodal.data_types import AudioContent

    from ..data.audio import header_seconds

    audio = [c.audio_url for m in sourced.sample.messages[start:] if m.role == "assistant" for c in _contents(m)
             if isinstance(c, AudioContent) and c.audio_url]
    return header_seconds(audio[-1], f"sample {sourced.sample_id}") if audio else None


def eval_prompts(sourced_samples, n):
    """The first `n` samples usable as cloning prompts (a fixed set: the same at every evaluation)."""
    out = []
    for s in sourced_samples:
        if len(out) >= n:
            break
        if (p := eval_prompt(s)) is not None:
            out.append(p)
    return out


def generate_rows(engine, prompts, scorer, max_new_tokens=512):
    """Clone each prompt greedily (audio forced) through a `HiggsAudioServeEngine` and score it: one row each with
    sim, dnsmos_*, wer/cer/error_rate (with ASR), speaker, language, sample_id, seconds (audio length), no_audio and
    how it failed (evaluation/failures.py: duration_ratio, stopped, silence_ratio, repetition)."""
    return [score_response(engine, generate_one(engine, p, max_new_tokens), p, scorer) for p in prompts]


def generate_one(engine, p, max_new_tokens):
    """The serve engine's response to one prompt (greedy, audio forced), or None when the clip could not be
    decoded (the audio tokenizer refuses a clip of a few frames: a failed generation, scored as no audio)."""
    try:
        return engine.generate(p.prompt, max_new_tokens=max_new_tokens, temperature=0.0, force_audio_gen=True,
                               ras_win_len=None)
    except RuntimeError as e:
        if "Kernel size can't be greater than actual input size" not in str(e):
            raise
        log.warning("generation eval: sample %s: the generated clip is too short to decode (%s)", p.sample_id, e)
        return None


def score_response(engine, resp, p, scorer):
    """The row of one generation (`generate_rows`)."""
    from ..data.audio import load_waveform
    from .failures import expected_seconds, health
    from .scorer import resample

    wav = np.asarray(resp.audio if resp is not None and resp.audio is not None else [], dtype=np.float32)
    seconds = len(wav) / resp.sampling_rate if wav.size else 0.0
    row = {"speaker": p.speaker, "language": p.language, "sample_id": p.sample_id, "seconds": seconds,
           "no_audio": wav.size == 0}
    ref = load_waveform(p.ref_audio, 16000, f"sample {p.sample_id}") if p.ref_audio else None  # retention: none
    ref_seconds = len(ref) / 16000 if ref is not None else None
    wav16k = resample(np.clip(wav, -1, 1), resp.sampling_rate) if wav.size else wav
    cfg, codes = engine.model.config, resp.generated_audio_tokens if resp is not None else np.zeros((0, 0))
    row.update(health(wav16k, seconds, codes, cfg.audio_stream_eos_id, cfg.audio_codebook_size,
                      expected_seconds(p.text, p.target_seconds, p.ref_text, ref_seconds),
                      cfg.use_delay_pattern))
    if wav.size:
        row.update(scorer.score(wav16k, ref, p.text, language=p.language))
    else:
        log.warning("generation eval: sample %s produced no audio", p.sample_id)
    return row


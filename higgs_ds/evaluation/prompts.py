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
                      sourced.language)


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
    sim, dnsmos_*, wer/cer/error_rate (with ASR), speaker, language, sample_id, seconds (audio length), no_audio."""
    from ..data.audio import load_waveform

    rows = []
    for p in prompts:
        resp = engine.generate(p.prompt, max_new_tokens=max_new_tokens, temperature=0.0, force_audio_gen=True,
                               ras_win_len=None)
        wav = np.asarray(resp.audio if resp.audio is not None else [], dtype=np.float32)
        row = {"speaker": p.speaker, "language": p.language, "sample_id": p.sample_id,
               "seconds": len(wav) / resp.sampling_rate, "no_audio": wav.size == 0}
        if wav.size:
            ref = load_waveform(p.ref_audio, 16000, f"sample {p.sample_id}")
            row.update(scorer.score(np.clip(wav, -1, 1), ref, p.text, sr=resp.sampling_rate, language=p.language))
        else:
            log.warning("generation eval: sample %s produced no audio", p.sample_id)
        rows.append(row)
    return rows


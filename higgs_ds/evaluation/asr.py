"""Intelligibility: transcribe with a local Whisper dir (transformers) and score WER / CER with jiwer, per language.

A multilingual checkpoint transcribes each clip in its sample's language (the `language` field); a clip without
one, or in a language the checkpoint has no token for, gets the language Whisper detects, reported in the row. An
English-only checkpoint (no language tokens) transcribes in English. Transcript and target text are normalised
for the language (text_norm.py) and the row's `error_rate` is the one the field reports for it: CER for Chinese,
Japanese, Korean and Thai, WER elsewhere (`error_rate_name`). There is no built-in ASR: without `--asr_model`
there is no WER.
"""
import logging

import numpy as np
import torch

from ..languages import base_language, error_rate_name
from .text_norm import WHITESPACE, normalizer

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


def make_normalizer(tokenizer=None, language="en"):
    """The normaliser of `language`, with the Whisper dir's English spelling map (empty when it has none)."""
    return normalizer(language, getattr(tokenizer, "english_spelling_normalizer", None))


def error_rates(hypothesis, reference, normalize, name="wer"):
    """{"wer", "cer", "error_rate", "error_rate_name"} of one transcript against its target text, both normalised;
    None for an empty target. `name` "cer": a language without word spaces (no WER; CER without whitespace)."""
    import jiwer

    ref, hyp = normalize(reference).strip(), normalize(hypothesis).strip()
    if name == "cer":
        ref, hyp = WHITESPACE.sub("", ref), WHITESPACE.sub("", hyp)
    out = {"wer": None, "cer": None, "error_rate": None, "error_rate_name": name}
    if not ref:
        return out
    out["cer"] = float(jiwer.cer(ref, hyp))
    if name == "wer":
        out["wer"] = float(jiwer.wer(ref, hyp))
    out["error_rate"] = out[name]
    return out


class WhisperASR:
    """Greedy Whisper transcription from a local dir (`WhisperForConditionalGeneration` + `WhisperProcessor`)."""

    name = "whisper"

    def __init__(self, model, processor, device="cpu", max_new_tokens=128):
        self.device, self.processor, self.model = device, processor, model.to(device).eval()
        self.lang_to_id = dict(getattr(model.generation_config, "lang_to_id", None) or {})  # {"<|vi|>": id}
        # the prompt (start, language, task, no-timestamps) and the answer share max_target_positions
        self.max_new_tokens = min(max_new_tokens, model.config.max_target_positions - 4)
        self.spelling = getattr(processor.tokenizer, "english_spelling_normalizer", None) or {}
        self._norms, self._warned = {}, set()
        self.generate_kwargs = {}  # extra `generate` options (bench/score.py fixes the transcript length)

    @classmethod
    def load(cls, path, device="cpu", **kw):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        return cls(WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True),
                   WhisperProcessor.from_pretrained(path, local_files_only=True), device, **kw)

    def normalizer(self, language):
        if language not in self._norms:
            self._norms[language] = normalizer(language, self.spelling)
        return self._norms[language]

    def detect(self, features):
        """Whisper's language code for one clip's features (its most likely language token)."""
        lang_id = int(self.model.detect_language(features)[0])
        return next(t for t, i in self.lang_to_id.items() if i == lang_id)[2:-2]

    def choose_language(self, features, language):
        """(Whisper code, "given" / "detected") for a clip; "detected" also when the checkpoint lacks the code."""
        code = base_language(language)
        if code and f"<|{code}|>" in self.lang_to_id:
            return code, "given"
        if code and code not in self._warned:
            self._warned.add(code)
            log.warning("this Whisper checkpoint has no <|%s|> token: clips in %s are transcribed in the language "
                        "it detects", code, language)
        return self.detect(features), "detected"

    @torch.no_grad()
    def transcribe(self, wav, language=None):
        """(transcript, language transcribed in, "given" / "detected" / "model": an English-only checkpoint)."""
        feats = self.processor(np.asarray(wav, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        feats = feats.input_features.to(self.device, self.model.dtype)
        kw, lang, how = {}, "en", "model"
        if self.lang_to_id:
            lang, how = self.choose_language(feats, language)
            kw = {"language": lang, "task": "transcribe"}
        ids = self.model.generate(feats, max_new_tokens=self.max_new_tokens, **self.generate_kwargs, **kw)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip(), lang, how

    def score(self, wav, text, language=None):
        """transcript, asr_language, language_source and the error rates; normalised for `language` (the
        sample's) or else the language it was transcribed in."""
        hyp, lang, how = self.transcribe(wav, language)
        if language and how == "model" and base_language(language) != "en" and language not in self._warned:
            self._warned.add(language)
            log.warning("the Whisper dir is English-only: clips in %s are transcribed in English", language)
        text_lang = language or lang
        return {"transcript": hyp, "asr_language": lang, "language_source": how,
                **error_rates(hyp, text, self.normalizer(text_lang), error_rate_name(text_lang))}

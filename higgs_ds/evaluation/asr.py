"""Intelligibility: transcribe with a local Whisper dir (transformers) and score WER / CER with jiwer.

Text normalisation is Whisper's English normaliser (lower case, punctuation removed, numbers and British
spellings standardised when the dir ships `normalizer.json`), applied to both transcript and target text, as in
the Open ASR leaderboard and seed-tts-eval. There is no built-in ASR: without `--asr_model` there is no WER.
"""
import numpy as np
import torch

SAMPLE_RATE = 16000


def make_normalizer(tokenizer=None):
    """Whisper's `EnglishTextNormalizer` with the dir's spelling map (empty when it has none)."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(getattr(tokenizer, "english_spelling_normalizer", None) or {})


def error_rates(hypothesis, reference, normalize):
    """{"wer", "cer"} of one transcript against its target text, both normalised; None for an empty target."""
    import jiwer

    ref, hyp = normalize(reference).strip(), normalize(hypothesis).strip()
    if not ref:
        return {"wer": None, "cer": None}
    return {"wer": float(jiwer.wer(ref, hyp)), "cer": float(jiwer.cer(ref, hyp))}


class WhisperASR:
    """Greedy Whisper transcription from a local dir (`WhisperForConditionalGeneration` + `WhisperProcessor`)."""

    name = "whisper"

    def __init__(self, model, processor, device="cpu", language="en", max_new_tokens=128):
        self.device, self.processor, self.model = device, processor, model.to(device).eval()
        lang_ids = getattr(model.generation_config, "lang_to_id", None) or {}
        # multilingual checkpoints: force English transcription; a dir without language tokens decodes freely
        self.generate_kwargs = {"language": language, "task": "transcribe"} if lang_ids else {}
        # the prompt (start, language, task, no-timestamps) and the answer share max_target_positions
        self.max_new_tokens = min(max_new_tokens, model.config.max_target_positions - 4)
        self.normalize = make_normalizer(processor.tokenizer)

    @classmethod
    def load(cls, path, device="cpu", **kw):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        return cls(WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True),
                   WhisperProcessor.from_pretrained(path, local_files_only=True), device, **kw)

    @torch.no_grad()
    def transcribe(self, wav):
        feats = self.processor(np.asarray(wav, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        ids = self.model.generate(feats.input_features.to(self.device, self.model.dtype),
                                  max_new_tokens=self.max_new_tokens, **self.generate_kwargs)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def score(self, wav, text):
        hyp = self.transcribe(wav)
        return {"transcript": hyp, **error_rates(hyp, text, self.normalize)}

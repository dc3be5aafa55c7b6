"""Text normalisation before WER / CER, by language, applied to the transcript and the target text alike.

- English: Whisper's `EnglishTextNormalizer` (with the Whisper dir's spelling map).
- Chinese (`zh`, `yue`): traditional -> simplified characters (zhconv, as seed-tts-eval converts Paraformer's
  output), NFKC (full-width letters and digits -> ASCII), punctuation, symbols and spaces removed; numerals are
  kept as written, as seed-tts-eval does (a transcript "3" against a target "三" is an error).
- Every other language: Whisper's `BasicTextNormalizer` (lower case, bracketed words dropped, punctuation and
  symbols -> spaces, NFKC), except that combining marks are kept: Whisper's turns them into spaces, which cuts
  Hindi words at their vowel signs and Arabic words at their harakat. Arabic script: harakat and tatweel are
  removed first (transcripts seldom carry them; the target text often does).
- Languages scored by CER (languages.CER_LANGUAGES): whitespace is removed after normalising.
"""
import re
import unicodedata

from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

from ..languages import CER_LANGUAGES, base_language

ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")  # harakat, Quranic marks, tatweel
ARABIC_SCRIPT = {"ar", "fa", "ur", "ps", "sd", "ug"}
WHITESPACE = re.compile(r"\s+")


def remove_symbols_keep_marks(s):
    """Whisper's `remove_symbols` without its combining-mark rule: punctuation and symbols become spaces."""
    return "".join(" " if unicodedata.category(c)[0] in "SP" else c for c in unicodedata.normalize("NFKC", s))


class BasicNormalizer(BasicTextNormalizer):
    """Whisper's basic normaliser that keeps combining marks (Devanagari vowel signs, Thai tone marks, ...)."""

    def __init__(self):
        super().__init__()
        self.clean = remove_symbols_keep_marks


def normalize_chinese(s):
    """Simplified characters, no punctuation, symbols or spaces; digits and Latin letters kept (lower case)."""
    import zhconv

    s = unicodedata.normalize("NFKC", zhconv.convert(s, "zh-cn")).lower()
    return "".join(c for c in s if unicodedata.category(c)[0] not in "SPZ" and not c.isspace())


def normalizer(language, english_spelling=None):
    """The normaliser (a str -> str callable) of a language tag; English when `language` is None."""
    lang = base_language(language) or "en"
    if lang == "en":
        return EnglishTextNormalizer(english_spelling or {})
    if lang in ("zh", "yue"):
        return normalize_chinese
    basic = BasicNormalizer()
    if lang in ARABIC_SCRIPT:
        return lambda s: basic(ARABIC_MARKS.sub("", s))
    if lang in CER_LANGUAGES:
        return lambda s: WHITESPACE.sub("", basic(s))
    return basic

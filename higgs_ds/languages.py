"""Language codes of samples: the shape check (ISO 639-1, ISO 639-3 or a BCP-47 tag), the base language of a tag
(the code Whisper and the normalisers use) and the error rate a language is scored with (docs/LANGUAGES.md)."""
import re

# primary subtag (2 or 3 letters), optional script (4 letters), region (2 letters or 3 digits), variants
TAG = re.compile(r"[a-z]{2,3}(-[a-z]{4})?(-([a-z]{2}|[0-9]{3}))?(-([a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*", re.I)
# written without spaces between words (Korean by the field's custom): scored by character error rate
CER_LANGUAGES = frozenset({"zh", "yue", "ja", "ko", "th"})
# ISO 639-3 / 639-2 codes -> the ISO 639-1 code Whisper's language tokens use (3-letter codes not listed are
# passed to Whisper as they are: `yue`, `haw`)
ISO639_1 = {
    "eng": "en", "zho": "zh", "chi": "zh", "cmn": "zh", "vie": "vi", "ara": "ar", "arb": "ar", "fra": "fr",
    "fre": "fr", "deu": "de", "ger": "de", "spa": "es", "por": "pt", "rus": "ru", "jpn": "ja", "kor": "ko",
    "tha": "th", "hin": "hi", "ita": "it", "nld": "nl", "dut": "nl", "tur": "tr", "pol": "pl", "ukr": "uk",
    "ind": "id", "msa": "ms", "may": "ms", "zsm": "ms", "fas": "fa", "per": "fa", "pes": "fa", "heb": "he",
    "ell": "el", "gre": "el", "ces": "cs", "cze": "cs", "ron": "ro", "rum": "ro", "hun": "hu", "swe": "sv",
    "dan": "da", "nor": "no", "nob": "no", "fin": "fi", "ben": "bn", "tam": "ta", "tel": "te", "urd": "ur",
    "tgl": "tl", "fil": "tl", "swa": "sw", "swh": "sw", "cat": "ca", "bul": "bg", "hrv": "hr", "srp": "sr",
    "slk": "sk", "slo": "sk", "slv": "sl", "lit": "lt", "lav": "lv", "est": "et", "mar": "mr", "guj": "gu",
    "kan": "kn", "mal": "ml", "pan": "pa", "nep": "ne", "npi": "ne", "khm": "km", "lao": "lo", "mya": "my",
    "bur": "my", "kaz": "kk", "uzb": "uz", "uzn": "uz", "aze": "az", "kat": "ka", "geo": "ka", "hye": "hy",
    "arm": "hy", "bel": "be", "mkd": "mk", "mac": "mk", "cym": "cy", "wel": "cy", "afr": "af", "amh": "am",
    "hau": "ha", "yor": "yo", "isl": "is", "ice": "is", "glg": "gl", "eus": "eu", "baq": "eu", "sqi": "sq",
    "alb": "sq", "bos": "bs", "mon": "mn", "tat": "tt", "sin": "si",
}


def check_language(value):
    """The tag in its usual case (`zh-Hant-TW`, `vi`), or ValueError saying what a language code looks like."""
    if not isinstance(value, str) or not TAG.fullmatch(value):
        raise ValueError(f"language {value!r} is not a language code: use ISO 639-1 ('vi'), ISO 639-3 ('vie') or "
                         "a BCP-47 tag ('zh-Hant-TW')")
    parts = value.split("-")
    return "-".join([parts[0].lower()] + [p.title() if len(p) == 4 and i == 1 else p.upper() if len(p) == 2
                                          else p.lower() for i, p in enumerate(parts[1:], 1)])


def base_language(tag):
    """The ISO 639-1 code of a tag where there is one (`zh-Hant-TW` -> `zh`, `vie` -> `vi`), else its primary
    subtag; None for None."""
    if tag is None:
        return None
    primary = tag.split("-")[0].lower()
    return ISO639_1.get(primary, primary)


def error_rate_name(language):
    """"cer" for a language written without word spaces (Chinese, Japanese, Korean, Thai), else "wer"."""
    return "cer" if base_language(language) in CER_LANGUAGES else "wer"


def language_flag(value):
    """argparse `type` of a language flag: `check_language`, its message as argparse's error (exit 2)."""
    import argparse

    try:
        return check_language(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_language_weights(value):
    """{"vi": 0.7, "en": 0.3} from "vi=0.7,en=0.3" (weights are normalised to sum 1); argparse `type`."""
    import argparse

    out = {}
    for part in value.split(","):
        tag, _, w = part.partition("=")
        try:
            lang, weight = check_language(tag.strip()), float(w)
        except ValueError as e:
            msg = str(e) if "language code" in str(e) else "expected TAG=WEIGHT, e.g. vi=0.7"
            raise argparse.ArgumentTypeError(f"{part!r}: {msg}") from None
        if not weight >= 0:
            raise argparse.ArgumentTypeError(f"{part!r}: a weight is a number >= 0")
        out[lang] = weight
    total = sum(out.values())
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: the weights sum to 0")
    return {k: v / total for k, v in out.items()}

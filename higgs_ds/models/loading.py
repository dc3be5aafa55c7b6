"""One loading path for the real release and the embedded tiny default (same on-disk layout)."""
import dataclasses
import logging
import os

import torch

from .audio_tokenizer import load_audio_tokenizer

log = logging.getLogger(__name__)


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


@dataclasses.dataclass
class ModelPaths:
    model_path: str
    audio_tokenizer_path: str
    tokenizer_path: str

    @classmethod
    def resolve(cls, model_path=None, audio_tokenizer_path=None, tokenizer_path=None):
        """Fill unset paths from the embedded tiny default (built on first use) and check they exist."""
        sibling = os.path.join(os.path.dirname(os.path.abspath(model_path)), "audio_tokenizer") if model_path else None
        if audio_tokenizer_path is None and sibling and os.path.isfile(os.path.join(sibling, "model.pth")):
            audio_tokenizer_path = sibling  # the embedded layout: <root>/model and <root>/audio_tokenizer
        if model_path is None or audio_tokenizer_path is None:
            from ..assets import ensure_tiny_assets

            tiny = ensure_tiny_assets()
            if model_path is None:
                model_path = tiny.model_path
                audio_tokenizer_path = audio_tokenizer_path or tiny.audio_tokenizer_path
            elif audio_tokenizer_path is None:
                raise ValueError("--model_path was given without --audio_tokenizer_path: a real model needs its "
                                 "audio tokenizer dir (config.json + model.pth)")
        paths = cls(model_path, audio_tokenizer_path, tokenizer_path or model_path)
        paths.check()
        return paths

    def check(self):
        """Every file the loaders need exists (raises FileNotFoundError naming the flag and the missing path)."""
        for flag, path, needs in (("--model_path", self.model_path, ("config.json", WEIGHTS)),
                                  ("--audio_tokenizer_path", self.audio_tokenizer_path, ("config.json", "model.pth")),
                                  ("--tokenizer_path", self.tokenizer_path, (TOKENIZER,))):
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{flag}: directory not found: {path}")
            for need in needs:
                names = (need,) if isinstance(need, str) else need
                if not any(os.path.isfile(os.path.join(path, n)) for n in names):
                    raise FileNotFoundError(f"{flag}: {os.path.join(path, names[0])} not found"
                                            + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""))


def load_text_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(path, dtype=torch.float32):
    from boson_multimodal.model.higgs_audio import HiggsAudioModel

    model = HiggsAudioModel.from_pretrained(path, torch_dtype=dtype)
    return model


def load_all(paths, dtype=torch.float32, device="cpu", audio=True):
    """(model, text tokenizer, audio tokenizer) from `ModelPaths`; no audio tokenizer (None) with audio=False."""
    tokenizer = load_text_tokenizer(paths.tokenizer_path)
    model = load_model(paths.model_path, dtype)
    model.set_audio_special_tokens(tokenizer)
    audio_tokenizer = None
    if audio:  # its construction draws random numbers: keep the RNG (LoRA init after this) the same without it
        with torch.random.fork_rng(devices=[]):
            audio_tokenizer = load_audio_tokenizer(paths.audio_tokenizer_path, device=device)
    return model, tokenizer, audio_tokenizer


def load_whisper_processor(model_path, processor_path=None):
    """The `WhisperProcessor` that `model_path`'s config needs (`encode_whisper_embed`), from a local dir; None
    when the config does not use Whisper. Reads only config.json, so a missing or wrong dir fails before the
    model loads. The serve engine would fetch `openai/whisper-large-v3-turbo` from the hub: never done here."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig

    config = HiggsAudioConfig.from_pretrained(model_path)
    if not config.encode_whisper_embed:
        if processor_path:
            log.warning("--whisper_processor_path %s ignored: %s/config.json has encode_whisper_embed false",
                        processor_path, model_path)
        return None
    if not processor_path:
        raise ValueError(f"{model_path}/config.json has encode_whisper_embed true (the Whisper audio tower): pass "
                         "--whisper_processor_path DIR, a local WhisperProcessor dir (e.g. a saved copy of "
                         "openai/whisper-large-v3-turbo, which the serve engine uses)")
    if not os.path.isfile(os.path.join(processor_path, "preprocessor_config.json")):
        raise FileNotFoundError(f"--whisper_processor_path {processor_path}: no preprocessor_config.json there; "
                                "expected a dir written by WhisperProcessor.save_pretrained")
    from transformers import WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(processor_path, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/TypeError for the many ways a dir is wrong
        raise ValueError(f"--whisper_processor_path {processor_path}: not a WhisperProcessor dir "
                         f"({type(e).__name__}: {e})") from None
    fe, enc = processor.feature_extractor, config.audio_encoder_config
    if not config.skip_audio_tower and (fe.feature_size != enc.num_mel_bins or
                                        fe.nb_max_frames != 2 * enc.max_source_positions):
        raise ValueError(f"--whisper_processor_path {processor_path}: {fe.feature_size} mel bins x "
                         f"{fe.nb_max_frames} frames, but the audio tower of {model_path} takes {enc.num_mel_bins} "
                         f"x {2 * enc.max_source_positions}")
    return processor

"""One loading path for the real release and the embedded tiny default (same on-disk layout)."""
import dataclasses
import logging
import os

import torch

from ..errors import ConfigError, InputNotFound
from . import locate
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
        """Check the dirs exist (an unset audio tokenizer path is the official one for the official model id, or
        `<model_path>/../audio_tokenizer`, the embedded layout). Hub repo ids and transformers-native dirs become
        local boson-format dirs first (models/locate.py). The tiny default for unset paths:
        `assets.resolve_model_paths`."""
        audio_tokenizer_path = audio_tokenizer_path or locate.default_audio_tokenizer(model_path)
        model_path, audio_tokenizer_path = locate.model_dir(model_path), locate.audio_tokenizer_dir(audio_tokenizer_path)
        sibling = os.path.join(os.path.dirname(os.path.abspath(model_path)), "audio_tokenizer") if model_path else None
        if audio_tokenizer_path is None and sibling and os.path.isfile(os.path.join(sibling, "model.pth")):
            audio_tokenizer_path = sibling  # the embedded layout: <root>/model and <root>/audio_tokenizer
        if model_path is None:
            raise ConfigError("no model path given")
        if not os.path.isdir(model_path):
            raise InputNotFound(f"--model_path: directory not found: {model_path}")
        if audio_tokenizer_path is None:
            raise ConfigError("--model_path was given without --audio_tokenizer_path: a real model needs its "
                                 "audio tokenizer dir (config.json + model.pth)")
        paths = cls(model_path, audio_tokenizer_path, locate.tokenizer_dir(tokenizer_path) or model_path)
        paths.check()
        return paths

    def check(self):
        """Every file the loaders need exists (raises FileNotFoundError naming the flag and the missing path)."""
        for flag, path, needs in (("--model_path", self.model_path, ("config.json", WEIGHTS)),
                                  ("--audio_tokenizer_path", self.audio_tokenizer_path, ("config.json", "model.pth")),
                                  ("--tokenizer_path", self.tokenizer_path, (TOKENIZER,))):
            if not os.path.isdir(path):
                raise InputNotFound(f"{flag}: directory not found: {path}")
            for need in needs:
                names = (need,) if isinstance(need, str) else need
                if not any(os.path.isfile(os.path.join(path, n)) for n in names):
                    raise InputNotFound(f"{flag}: {os.path.join(path, names[0])} not found"
                                            + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""))


def load_text_tokenizer(path):
    """The text tokenizer of `path`. A `PreTrainedTokenizerFast` dir (Llama 3, the release, the tiny default) is
    loaded by that class directly, which is what `AutoTokenizer` would return, without `AutoTokenizer`'s import of
    the model stack (transformers' auto classes import accelerate and DeepSpeed): validation starts in a second."""
    import json

    config = os.path.join(path, "tokenizer_config.json")
    cls = None
    if os.path.isfile(config):
        with open(config) as f:
            cls = json.load(f).get("tokenizer_class")
    if cls == "PreTrainedTokenizerFast" or (cls is None and os.path.isfile(os.path.join(path, "tokenizer.json"))):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)
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
    if audio:  # leaves the RNG as it was (LoRA init after this is the same without it)
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
        raise ConfigError(f"{model_path}/config.json has encode_whisper_embed true (the Whisper audio tower): pass "
                         "--whisper_processor_path DIR, a local WhisperProcessor dir (e.g. a saved copy of "
                         "openai/whisper-large-v3-turbo, which the serve engine uses)")
    if not os.path.isfile(os.path.join(processor_path, "preprocessor_config.json")):
        raise InputNotFound(f"--whisper_processor_path {processor_path}: no preprocessor_config.json there; "
                                "expected a dir written by WhisperProcessor.save_pretrained")
    from transformers import WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(processor_path, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/TypeError for the many ways a dir is wrong
        raise ConfigError(f"--whisper_processor_path {processor_path}: not a WhisperProcessor dir "
                         f"({type(e).__name__}: {e})") from None
    fe, enc = processor.feature_extractor, config.audio_encoder_config
    if not config.skip_audio_tower and (fe.feature_size != enc.num_mel_bins or
                                        fe.nb_max_frames != 2 * enc.max_source_positions):
        raise ConfigError(f"--whisper_processor_path {processor_path}: {fe.feature_size} mel bins x "
                         f"{fe.nb_max_frames} frames, but the audio tower of {model_path} takes {enc.num_mel_bins} "
                         f"x {2 * enc.max_source_positions}")
    return processor

"""One loading path for the real release and the embedded tiny default (same on-disk layout)."""
import dataclasses
import logging
import os

import torch

from .audio_tokenizer import load_audio_tokenizer

log = logging.getLogger(__name__)


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
        for flag, path, must in (("--model_path", self.model_path, "config.json"),
                                 ("--audio_tokenizer_path", self.audio_tokenizer_path, "config.json"),
                                 ("--tokenizer_path", self.tokenizer_path, None)):
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{flag}: directory not found: {path}")
            if must and not os.path.isfile(os.path.join(path, must)):
                raise FileNotFoundError(f"{flag}: {os.path.join(path, must)} not found")


def load_text_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(path, dtype=torch.float32):
    from boson_multimodal.model.higgs_audio import HiggsAudioModel

    model = HiggsAudioModel.from_pretrained(path, torch_dtype=dtype)
    return model


def load_all(paths, dtype=torch.float32, device="cpu"):
    """(model, text tokenizer, audio tokenizer) from `ModelPaths`."""
    tokenizer = load_text_tokenizer(paths.tokenizer_path)
    model = load_model(paths.model_path, dtype)
    model.set_audio_special_tokens(tokenizer)
    audio_tokenizer = load_audio_tokenizer(paths.audio_tokenizer_path, device=device)
    return model, tokenizer, audio_tokenizer

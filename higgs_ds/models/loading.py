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


def load_all(paths, dtype=torch.float32, device="cpu"):
    """(model, text tokenizer, audio tokenizer) from `ModelPaths`."""
    tokenizer = load_text_tokenizer(paths.tokenizer_path)
    model = load_model(paths.model_path, dtype)
    model.set_audio_special_tokens(tokenizer)
    audio_tokenizer = load_audio_tokenizer(paths.audio_tokenizer_path, device=device)
    return model, tokenizer, audio_tokenizer

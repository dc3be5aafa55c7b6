"""Offline loading of the Higgs audio tokenizer (`HiggsAudioTokenizer`) from a local directory.

`load_higgs_audio_tokenizer` builds its semantic teacher with `AutoModel.from_pretrained("bosonai/hubert_base")`,
which needs the hub. Its weights are then overwritten by `model.pth` (which carries `semantic_model.*`), so the
teacher only has to have the right *shape*. A directory may carry it as `semantic_teacher/` (our tiny default
does); otherwise `semantic_teacher_path` names one; otherwise the teacher repo that config.json's
`semantic_techer` names is resolved through the hub cache (models/hub.py), never by boson-multimodal itself.
"""
import contextlib
import json
import os
from unittest import mock

import torch

from ..errors import InputNotFound
from . import hub

SEMANTIC_TEACHER_SUBDIR = "semantic_teacher"


def _local_automodel(teacher_dir):
    import transformers

    class LocalAutoModel:
        """Stands in for `transformers.AutoModel` inside the tokenizer module: any hub id -> `teacher_dir`."""

        @staticmethod
        def from_pretrained(*_args, trust_remote_code=False, **_kwargs):
            return transformers.AutoModel.from_pretrained(teacher_dir, trust_remote_code=trust_remote_code)

    return LocalAutoModel


@contextlib.contextmanager
def semantic_teacher_from(teacher_dir):
    """Redirect the tokenizer constructor's hub download to a local teacher dir (no-op when None)."""
    if teacher_dir is None:
        yield
        return
    import boson_multimodal.audio_processing.higgs_audio_tokenizer as hat

    with mock.patch.object(hat, "AutoModel", _local_automodel(teacher_dir)):
        yield


def find_semantic_teacher(tokenizer_dir, semantic_teacher_path=None):
    """The teacher dir: given, else `<tokenizer_dir>/semantic_teacher/`, else its repo from the hub cache."""
    if semantic_teacher_path:
        return semantic_teacher_path
    local = os.path.join(tokenizer_dir, SEMANTIC_TEACHER_SUBDIR)
    if os.path.isdir(local):
        return local
    with open(os.path.join(tokenizer_dir, "config.json")) as f:
        ref = hub.semantic_teacher_ref(json.load(f))
    return hub.download(ref, "semantic_teacher", f"audio tokenizer {tokenizer_dir}: semantic teacher") if ref else None


def load_audio_tokenizer(tokenizer_dir, device="cpu", semantic_teacher_path=None):
    """Load `HiggsAudioTokenizer` from `tokenizer_dir` (config.json + model.pth) without touching the hub.

    Raises FileNotFoundError naming the missing file; checks that every weight in model.pth was used
    (boson-multimodal loads with strict=False, which would hide a wrong checkpoint).
    """
    from boson_multimodal.audio_processing.higgs_audio_tokenizer import load_higgs_audio_tokenizer

    for name in ("config.json", "model.pth"):
        path = os.path.join(tokenizer_dir, name)
        if not os.path.isfile(path):
            raise InputNotFound(f"audio tokenizer: {path} not found (expected config.json + model.pth in {tokenizer_dir})")
    teacher = find_semantic_teacher(tokenizer_dir, semantic_teacher_path)
    with semantic_teacher_from(teacher):
        tok = load_higgs_audio_tokenizer(tokenizer_dir, device=device)
    saved = torch.load(os.path.join(tokenizer_dir, "model.pth"), map_location="cpu", weights_only=True)
    unknown = sorted(set(saved) - set(tok.state_dict()))
    if unknown:
        raise ValueError(f"audio tokenizer: {len(unknown)} weights in {tokenizer_dir}/model.pth do not fit the config "
                         f"(first: {unknown[:3]})")
    return tok

"""Offline loading of the Higgs audio tokenizer (`HiggsAudioTokenizer`) from a local directory.

`load_higgs_audio_tokenizer` builds its semantic teacher with `AutoModel.from_pretrained("bosonai/hubert_base")`,
which needs the hub. Its weights are then overwritten by `model.pth` (which carries `semantic_model.*`), so the
teacher only has to have the right *shape*. A directory may carry it as `semantic_teacher/` (our tiny default
does); otherwise `semantic_teacher_path` names one; otherwise the teacher repo that config.json's
`semantic_techer` names is resolved through the hub cache (models/hub.py), never by boson-multimodal itself.

Widths: boson-multimodal hard-codes three widths that transformers' `HiggsAudioV2TokenizerConfig` leaves free (the
acoustic encoder's 64 and decoder's 1024 channels, the semantic path's 768 = the teacher's hidden size). A config.json
with a `higgs_ds_widths` entry (`WIDTHS_KEY`; the embedded tiny tokenizer has one) gets those modules rebuilt with
its widths, from boson's own classes, before its weights are loaded (strictly).
"""
import contextlib
import json
import os
from unittest import mock

import torch

from ..errors import InputNotFound
from . import hub

SEMANTIC_TEACHER_SUBDIR = "semantic_teacher"
WIDTHS_KEY = "higgs_ds_widths"
BOSON_WIDTHS = {"encoder_hidden_size": 64, "decoder_hidden_size": 1024, "semantic_hidden_size": 768}


def _local_automodel(teacher_dir):
    import transformers

    class LocalAutoModel:
        """Stands in for `transformers.AutoModel` inside the tokenizer module: any hub id -> `teacher_dir`."""

        @staticmethod
        def from_pretrained(*_args, trust_remote_code=False, **_kwargs):
            with torch.device("cpu"):  # real weights even while the rest of the tokenizer is built on "meta"
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


def _set_widths(tok, config, widths):
    """Rebuild the modules whose widths boson hard-codes (and everything sized by them), as its constructor does."""
    import boson_multimodal.audio_processing.higgs_audio_tokenizer as hat

    semantic = widths["semantic_hidden_size"]
    if tok.semantic_model.config.hidden_size != semantic:
        raise ValueError(f"audio tokenizer: {WIDTHS_KEY}.semantic_hidden_size {semantic} != the semantic teacher's "
                         f"hidden_size {tok.semantic_model.config.hidden_size}")
    d, ratios = config.get("D", 128), config.get("ratios", [8, 5, 4, 2])
    tok.semantic_dim = tok.encoder_semantic_dim = semantic
    tok.quantizer_dim = (d + semantic) // config.get("vq_scale", 1)
    tok.encoder = hat.dac2.Encoder(widths["encoder_hidden_size"], ratios, d)
    tok.decoder_2 = hat.dac2.Decoder(d, widths["decoder_hidden_size"], ratios)
    tok.encoder_semantic = hat.Encoder(input_channels=semantic, encode_channels=semantic)
    tok.decoder_semantic = hat.Decoder(code_dim=semantic, output_channels=semantic, decode_channels=semantic)
    tok.quantizer = hat.ResidualVectorQuantizer(dimension=tok.quantizer_dim, codebook_dim=config.get("codebook_dim"),
                                                n_q=config.get("n_q", 8), bins=config.get("bins", 1024))
    tok.fc_prior = torch.nn.Linear(d + semantic, tok.quantizer_dim)
    tok.fc_post1 = torch.nn.Linear(tok.quantizer_dim, semantic)
    tok.fc_post2 = torch.nn.Linear(tok.quantizer_dim, d)


def build_audio_tokenizer(config, teacher_dir, device="cpu"):
    """A randomly initialised `HiggsAudioTokenizer(**config)` (teacher weights from `teacher_dir`). With
    `WIDTHS_KEY` in `config`, boson's constructor runs on the meta device and the wide modules are rebuilt narrow,
    so nothing of the hard-coded widths is ever allocated."""
    import boson_multimodal.audio_processing.higgs_audio_tokenizer as hat

    config = dict(config)
    widths = config.pop(WIDTHS_KEY, None)
    if widths and not isinstance(config.get("bins", 1024), int):
        raise ValueError(f"audio tokenizer: {WIDTHS_KEY} needs the RVQ quantizer (an integer `bins`)")
    with semantic_teacher_from(teacher_dir), (torch.device("meta") if widths else contextlib.nullcontext()):
        tok = hat.HiggsAudioTokenizer(**config, device=device)
    if widths:
        _set_widths(tok, config, {**BOSON_WIDTHS, **widths})
        left = [n for n, t in [*tok.named_parameters(), *tok.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"audio tokenizer: boson's constructor built modules {WIDTHS_KEY} does not rebuild: {left[:3]}")
    return tok


def _load_narrow(tokenizer_dir, config, teacher, device):
    tok = build_audio_tokenizer(config, teacher, device)
    tok.load_state_dict(torch.load(os.path.join(tokenizer_dir, "model.pth"), map_location="cpu", weights_only=True))
    return tok.to(device).eval()


def load_audio_tokenizer(tokenizer_dir, device="cpu", semantic_teacher_path=None):
    """Load `HiggsAudioTokenizer` from `tokenizer_dir` (config.json + model.pth) without touching the hub.

    Raises InputNotFound naming the missing file; checks that every weight in model.pth was used
    (boson-multimodal loads with strict=False, which would hide a wrong checkpoint). Its construction draws random
    numbers (then overwritten): the caller's RNG state is left as it was (LoRA init, sampling, and a run that
    prepares its data in-process train like one that does not).
    """
    with torch.random.fork_rng(devices=[]):
        return _load(tokenizer_dir, device, semantic_teacher_path)


def _load(tokenizer_dir, device, semantic_teacher_path):
    from boson_multimodal.audio_processing.higgs_audio_tokenizer import load_higgs_audio_tokenizer

    for name in ("config.json", "model.pth"):
        path = os.path.join(tokenizer_dir, name)
        if not os.path.isfile(path):
            raise InputNotFound(f"audio tokenizer: {path} not found (expected config.json + model.pth in {tokenizer_dir})")
    teacher = find_semantic_teacher(tokenizer_dir, semantic_teacher_path)
    with open(os.path.join(tokenizer_dir, "config.json")) as f:
        config = json.load(f)
    if WIDTHS_KEY in config:
        return _load_narrow(tokenizer_dir, config, teacher, device)
    with semantic_teacher_from(teacher):
        tok = load_higgs_audio_tokenizer(tokenizer_dir, device=device)
    saved = torch.load(os.path.join(tokenizer_dir, "model.pth"), map_location="cpu", weights_only=True)
    unknown = sorted(set(saved) - set(tok.state_dict()))
    if unknown:
        raise ValueError(f"audio tokenizer: {len(unknown)} weights in {tokenizer_dir}/model.pth do not fit the config "
                         f"(first: {unknown[:3]})")
    return tok


@contextlib.contextmanager
def serve_engine_audio_tokenizer():
    """`HiggsAudioServeEngine` loads its audio tokenizer through `load_audio_tokenizer` (offline, widths)."""
    from boson_multimodal.serve import serve_engine as se

    with mock.patch.object(se, "load_higgs_audio_tokenizer", lambda path, device="cuda": load_audio_tokenizer(path, device)):
        yield

"""Hub repo ids resolve offline through a hand-built HF cache: pins, @revision, HF_HOME, clear errors."""
import os
import subprocess
import sys

import pytest

from higgs_ds.errors import EXIT_NOINPUT, ModelSourceError
from higgs_ds.models import hub
from tests.helpers import ROOT  # noqa: E402
from tests.models.hf_cache import add_snapshot, set_ref

MAIN_NATIVE = "f" * 40  # what refs/main names today: a revision this cache does not hold
OTHER = "1234567890abcdef1234567890abcdef12345678"
TEACHER_REV = "7" * 40


@pytest.fixture
def hub_cache(tmp_path, tiny_assets, monkeypatch):
    """Official model + tokenizer at their pinned revisions, refs/main elsewhere; the tokenizer's semantic teacher
    only as the bosonai/hubert_base repo (as on a real machine), and HF_HUB_OFFLINE=1, HF_HUB_CACHE set."""
    cache = str(tmp_path / "hub")
    add_snapshot(cache, hub.MODEL_REPO, hub.PINNED[hub.MODEL_REPO], tiny_assets.model_path)
    set_ref(cache, hub.MODEL_REPO, "main", MAIN_NATIVE)
    add_snapshot(cache, hub.TOKENIZER_REPO, hub.PINNED[hub.TOKENIZER_REPO], tiny_assets.audio_tokenizer_path,
                 skip={os.path.join("semantic_teacher", n) for n in os.listdir(
                     os.path.join(tiny_assets.audio_tokenizer_path, "semantic_teacher"))})
    set_ref(cache, hub.TOKENIZER_REPO, "main", MAIN_NATIVE)
    add_snapshot(cache, "bosonai/hubert_base", TEACHER_REV,
                 os.path.join(tiny_assets.audio_tokenizer_path, "semantic_teacher"), refs=("main",))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    return cache


def snapshot(cache, repo, rev):
    return os.path.join(cache, "models--" + repo.replace("/", "--"), "snapshots", rev)


def test_parse_ref(tmp_path, monkeypatch):
    assert hub.parse_ref("org/name") == hub.HubRef("org/name")
    assert hub.parse_ref("org/name@v1.0") == hub.HubRef("org/name", "v1.0")
    assert str(hub.parse_ref(hub.MODEL_REPO)) == f"{hub.MODEL_REPO}@{hub.PINNED[hub.MODEL_REPO]}"
    assert str(hub.parse_ref("org/name")) == "org/name@main"
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    monkeypatch.chdir(tmp_path)  # a local dir shaped like a repo id stays a path
    assert hub.parse_ref("org/name") is None
    assert hub.parse_ref("/abs/path") is None and hub.parse_ref("./rel/x") is None and hub.parse_ref("name") is None


def test_official_ids_resolve_to_the_pins_while_main_is_elsewhere(hub_cache):
    from higgs_ds.models.loading import ModelPaths, load_all

    paths = ModelPaths.resolve(hub.MODEL_REPO)  # the tokenizer repo is implied
    assert paths.model_path == snapshot(hub_cache, hub.MODEL_REPO, hub.PINNED[hub.MODEL_REPO])
    assert paths.audio_tokenizer_path == snapshot(hub_cache, hub.TOKENIZER_REPO, hub.PINNED[hub.TOKENIZER_REPO])
    model, tok, audio_tok = load_all(paths)  # boson loads from the snapshot dirs; the teacher from the cache
    assert model.config.audio_num_codebooks == 8 and audio_tok.n_q == 8


def test_teacher_comes_from_its_repo_in_the_cache(hub_cache):
    from higgs_ds.models.audio_tokenizer import find_semantic_teacher

    tk = snapshot(hub_cache, hub.TOKENIZER_REPO, hub.PINNED[hub.TOKENIZER_REPO])
    assert not os.path.isdir(os.path.join(tk, "semantic_teacher"))
    assert find_semantic_teacher(tk) == snapshot(hub_cache, "bosonai/hubert_base", TEACHER_REV)


def test_at_revision(hub_cache, tiny_assets):
    add_snapshot(hub_cache, "someone/voice", OTHER, tiny_assets.model_path, refs=("v1",))
    assert hub.resolve(f"someone/voice@{OTHER}", "model", "--model_path") == snapshot(hub_cache, "someone/voice", OTHER)
    assert hub.resolve("someone/voice@v1", "model", "--model_path") == snapshot(hub_cache, "someone/voice", OTHER)
    with pytest.raises(ModelSourceError, match=f"--model_path {hub.MODEL_REPO}@main: not in the local cache"):
        hub.resolve(f"{hub.MODEL_REPO}@main", "model", "--model_path")  # main points at an absent revision


def test_hf_home(hub_cache, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", os.path.dirname(hub_cache))  # <HF_HOME>/hub
    assert hub.resolve(hub.MODEL_REPO, "model", "x") == snapshot(hub_cache, hub.MODEL_REPO, hub.PINNED[hub.MODEL_REPO])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelSourceError, match="not in the local cache"):
        hub.resolve(hub.MODEL_REPO, "model", "x")


def test_missing_files_name_repo_revision_and_fix(hub_cache, tiny_assets):
    add_snapshot(hub_cache, "someone/partial", OTHER, tiny_assets.model_path, refs=("main",),
                 skip={"model.safetensors"})
    with pytest.raises(ModelSourceError) as e:
        hub.resolve("someone/partial", "model", "--model_path")
    msg = str(e.value)
    assert "someone/partial@main" in msg and "lacks model.safetensors" in msg
    assert "hf download someone/partial --revision main" in msg


def test_a_missing_relative_dir_says_both(hub_cache):
    with pytest.raises(ModelSourceError, match=r"data/model@main: not in the local cache .* no local directory"):
        hub.resolve("data/model", "model", "--model_path")


def test_cli_error_is_one_message(hub_cache):
    """train.py with a revision that is not cached: exit 66 (EX_NOINPUT), one line naming repo@revision, no traceback."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "higgs_ds/train.py", "--model_path", f"{hub.MODEL_REPO}@{OTHER}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_NOINPUT, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{hub.MODEL_REPO}@{OTHER}: not in the local cache (offline)" in proc.stderr
    assert f"hf download {hub.MODEL_REPO} --revision {OTHER}" in proc.stderr


def test_prepare_takes_hub_ids(hub_cache, small_data, tiny_assets, tmp_path):
    """`higgs-ds prepare --tokenizer_path <model repo> --audio_tokenizer_path <tokenizer repo>` works offline from
    the cache (the text tokenizer's files alone from the model repo, at its pin) and prepares with those tokenizers."""
    import json

    from higgs_ds.data.prepare import audio_tokenizer_id as tokenizer_id
    from higgs_ds.data.prepare import text_tokenizer_id
    from higgs_ds.models import locate
    from tests.helpers import PYTHON, run_cmd

    assert locate.tokenizer_dir(hub.MODEL_REPO) == snapshot(hub_cache, hub.MODEL_REPO, hub.PINNED[hub.MODEL_REPO])
    out = str(tmp_path / "prepared")
    run_cmd([PYTHON, "-m", "higgs_ds.cli", "prepare", "--data", small_data[0], "--output", out,
             "--tokenizer_path", hub.MODEL_REPO, "--audio_tokenizer_path", hub.TOKENIZER_REPO])
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    assert index["spec"]["audio_tokenizer_id"] == tokenizer_id(tiny_assets.audio_tokenizer_path)
    assert index["spec"]["text_tokenizer_id"] == text_tokenizer_id(tiny_assets.model_path)
    assert index["num_samples"] == 8

"""Hub repo ids (`org/name` or `org/name@revision`) -> local snapshot dirs, through huggingface_hub's cache.

The two official repos hold the transformers-native format on `main` since 2026-04; without an explicit
revision they resolve to the last boson-format commits (`PINNED`). `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and `HF_HOME`
are read at call time (huggingface_hub reads them at import), so a test or a user may set them late.
boson-multimodal is only ever handed the local dirs returned here, never a repo id.
"""
import dataclasses
import os
import re

from ..errors import ModelSourceError

MODEL_REPO = "bosonai/higgs-audio-v2-generation-3B-base"
TOKENIZER_REPO = "bosonai/higgs-audio-v2-tokenizer"
PINNED = {MODEL_REPO: "10840182ca4ad5d9d9113b60b9bb3c1ef1ba3f84",
          TOKENIZER_REPO: "9d4988fbd4ad07b4cac3a5fa462741a41810dbec"}
# the repos HiggsAudioTokenizer's constructor fetches by name, per `semantic_techer` in its config.json
SEMANTIC_TEACHERS = {"hubert_base_general": "bosonai/hubert_base", "hubert_base": "facebook/hubert-base-ls960",
                     "wavlm_base_plus": "microsoft/wavlm-base-plus"}
# what to fetch: both formats (boson and transformers-native), never optimizer states or audio samples
PATTERNS = {"model": ["*.json", "*.safetensors", "tokenizer.model"],
            "audio_tokenizer": ["*.json", "*.pth", "*.safetensors"],
            "semantic_teacher": ["*.json", "*.safetensors", "*.bin", "*.py"],
            "tokenizer": ["tokenizer*.json", "special_tokens_map.json", "tokenizer.model"]}
# one of each group must be in a snapshot (either format); checked after download, before anything loads
REQUIRED = {"model": [("config.json",), ("model.safetensors", "model.safetensors.index.json")],
            "audio_tokenizer": [("config.json",), ("model.pth", "model.safetensors")],
            "semantic_teacher": [("config.json",)], "tokenizer": [("tokenizer.json", "tokenizer.model")]}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")
_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})/?$")
_TRUE = {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None  # None: the pin for official repos, else `main`

    @property
    def effective_revision(self):
        return self.revision or PINNED.get(self.repo_id, "main")

    def __str__(self):
        return f"{self.repo_id}@{self.effective_revision}"


def parse_ref(spec):
    """`org/name[@rev]` -> HubRef; None for anything that exists on disk or does not look like a repo id."""
    if spec is None or os.path.exists(spec) or spec.startswith((".", "/", "~")) or not _REPO_ID.match(spec):
        return None
    repo_id, _, revision = spec.partition("@")
    return HubRef(repo_id, revision or None)


def hub_cache_dir():
    """HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's own order)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def offline():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def fetch_hint(ref, kind):
    patterns = " ".join(f"'{p}'" for p in PATTERNS[kind])
    return (f"fetch it on a machine with network: `hf download {ref.repo_id} --revision {ref.effective_revision} "
            f"--include {patterns}` (HF_HUB_CACHE={hub_cache_dir()}), then copy that cache here, or pass a local dir")


def download(ref, kind, flag):
    """snapshot_download of `ref` (allow-patterns of `kind`) into the hub cache; ModelSourceError when unavailable."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(ref.repo_id, revision=ref.effective_revision, allow_patterns=PATTERNS[kind],
                                 cache_dir=hub_cache_dir(), local_files_only=offline())
    except Exception as e:  # huggingface_hub raises LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors...
        why = "not in the local cache (offline)" if offline() else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        raise ModelSourceError(f"{flag} {ref}: {why}; {fetch_hint(ref, kind)}") from None
    missing = [names for names in REQUIRED[kind] if not any(os.path.isfile(os.path.join(path, n)) for n in names)]
    if missing:
        raise ModelSourceError(f"{flag} {ref}: the cached snapshot {path} lacks {' / '.join(missing[0])}; "
                          f"{fetch_hint(ref, kind)}")
    return path


def resolve(spec, kind, flag):
    """A local path stays as it is; a repo id becomes its snapshot dir in the hub cache."""
    ref = parse_ref(spec)
    if ref is None:
        return spec
    try:
        return download(ref, kind, flag)
    except ModelSourceError as e:
        if ref.revision is None and ref.repo_id not in PINNED:
            raise ModelSourceError(f"{e} (and there is no local directory {os.path.abspath(spec)})") from None
        raise


def ref_from_path(path):
    """HubRef of a snapshot dir of the hub cache (`.../models--org--name/snapshots/<rev>`), else None."""
    m = _SNAPSHOT.search(os.path.realpath(path)) or _SNAPSHOT.search(os.path.abspath(path))
    return HubRef(f"{m[1]}/{m[2]}", m[3]) if m else None


def semantic_teacher_ref(tokenizer_config):
    """HubRef of the semantic teacher a boson tokenizer config.json names (None if it names none we know)."""
    repo = SEMANTIC_TEACHERS.get(tokenizer_config.get("semantic_techer", "hubert_base_general"))
    return HubRef(repo) if repo else None

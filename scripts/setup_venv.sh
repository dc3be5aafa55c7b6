#!/usr/bin/env bash
# Creates (or refreshes) the higgs_ds CPU virtualenv at .venv in the repo root with the pinned, verified stack,
# then installs higgs_ds itself in editable mode. Idempotent: a re-run skips finished steps in seconds.
#   VENV=/path PYTHON=python3.11 scripts/setup_venv.sh
#   HIGGS_DS_DEVICE=gpu scripts/setup_venv.sh     # on a CUDA node: PyPI's CUDA torch, DeepSpeed ops JIT-built on use
# Why each step is the way it is: docs/INSTALL.md. Never lets pip resolve torch (a CUDA build of several GB).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
REQ="$ROOT/requirements/cpu.txt"
REQ_T5="$ROOT/requirements/transformers5.txt"
DEVICE="${HIGGS_DS_DEVICE:-cpu}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 DS_BUILD_OPS=0
if [ "$DEVICE" = cpu ]; then export DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1; else export DS_BUILD_SHM_COMM=0; fi
CONS="$(mktemp)"; trap 'rm -f "$CONS"' EXIT
echo "torch==2.13.0" > "$CONS"
STAMP="$VENV/.higgs_ds_stamp"
WANT="$DEVICE-$(cat "$REQ" "$REQ_T5" "$0" "$ROOT/setup.py" | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "venv up to date: $VENV"; exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
echo "== 1/5 torch 2.13.0 (CPU wheel)"
"${PIP[@]}" install -q -c "$CONS" "torch==2.13.0"
if [ "$DEVICE" = cpu ]; then
  "$VENV/bin/python" -c "import torch,sys; v=torch.__version__; sys.exit(0 if v.endswith('+cpu') else 'not the CPU build: '+v)"
fi
echo "== 2/5 deepspeed 0.19.8 (sdist, built against the installed torch, with the CPU shm comm op)"
if ! "$VENV/bin/python" -c "import deepspeed.git_version_info_installed as g,sys; sys.exit(0 if g.version=='0.19.8' and (g.installed_ops.get('deepspeed_shm_comm') or '$DEVICE'=='gpu') else 1)" 2>/dev/null; then
  "${PIP[@]}" install -q -c "$CONS" --no-deps --no-build-isolation --no-cache-dir --force-reinstall "deepspeed==0.19.8"
fi
echo "== 3/5 pinned closure (--no-deps: no resolver)"
"${PIP[@]}" install -q -c "$CONS" --no-deps --no-build-isolation -r "$REQ"
echo "== 4/5 torchaudio: drop its CUDA-linked libs; install higgs_ds (editable)"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$SITE"/torchaudio/lib/*.so
"${PIP[@]}" install -q -c "$CONS" --no-deps --no-build-isolation -e "$ROOT"
echo "== 4b/5 transformers 5 in isolation (--target $VENV/transformers5: only tests' subprocesses put it on their path)"
if ! PYTHONPATH="$VENV/transformers5" "$VENV/bin/python" -c "import transformers,sys; sys.exit(transformers.__version__!='$(sed -n 's/^transformers==//p' "$REQ_T5")')" 2>/dev/null; then
  rm -rf "$VENV/transformers5"
  "${PIP[@]}" install -q --no-deps --target "$VENV/transformers5" -r "$REQ_T5"
fi
echo "== 5/5 verify"
HIGGS_DS_DEVICE=$DEVICE HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, os
cpu = os.environ["HIGGS_DS_DEVICE"] == "cpu"
if cpu:
    os.environ["DS_ACCELERATOR"] = "cpu"
import torch, torchaudio.functional as F
assert torch.__version__.startswith("2.13.0") and (torch.__version__.endswith("+cpu") or not cpu), torch.__version__
assert F.resample(torch.zeros(1, 24000), 24000, 16000).shape[-1] == 16000
from boson_multimodal.model.higgs_audio import HiggsAudioModel
from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine
from boson_multimodal.audio_processing.higgs_audio_tokenizer import load_higgs_audio_tokenizer
import deepspeed, peft, transformers, tensorboard, higgs_ds
names = {d.metadata["Name"].lower() for d in md.distributions()}
bad = sorted(n for n in names if (cpu and (n.startswith("nvidia") or n == "triton")) or n in ("torchvision", "boto3", "ruff"))
assert not bad, f"unwanted packages present: {bad}"
print("OK", torch.__version__, deepspeed.__version__, transformers.__version__, peft.__version__)
PY
echo "$WANT" > "$STAMP"
echo "venv ready: $VENV"

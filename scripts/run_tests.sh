#!/usr/bin/env bash
# Set up (pinned venv at .venv) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast subset).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_venv.sh
if ! command -v espeak-ng >/dev/null; then  # tests of `higgs-ds score` synthesise real speech with it (docs/EVAL.md)
  echo "== espeak-ng (Debian package) for the scoring tests"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q espeak-ng
fi
export DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -ra --durations=15 "$@"

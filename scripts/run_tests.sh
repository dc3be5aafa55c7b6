#!/usr/bin/env bash
# Set up (pinned venv at .venv) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast subset).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_venv.sh
export DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -ra --durations=15 "$@"

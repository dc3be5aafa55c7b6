#!/usr/bin/env bash
# Set up (pinned venv at .venv) and train a LoRA adapter on the embedded tiny default:
# deepspeed launcher, ZeRO-2, 2 CPU ranks. Extra arguments go to higgs_ds/train.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_venv.sh
export DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/deepspeed --num_accelerators 2 --master_port "${MASTER_PORT:-29500}" higgs_ds/train.py \
  --deepspeed ds_configs/cpu_zero2.json --num_epochs 10 --learning_rate 3e-3 --log_every 5 \
  --output_dir outputs/tiny "$@"

#!/usr/bin/env bash
# One node, 8 GPUs, ZeRO-2 bf16. Extra arguments go to train.py, e.g.
#   launch/single_node.sh --model_path /models/higgs-v2 --audio_tokenizer_path /models/tok \
#       --train_data data/train.jsonl --val_data data/val.jsonl --output_dir outputs/run1 --save_every 500 --resume auto
set -euo pipefail
cd "$(dirname "$0")/.."
NUM_GPUS="${NUM_GPUS:-8}"
exec deepspeed --num_gpus "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" \
    higgs_ds/train.py --deepspeed "${DS_CONFIG:-ds_configs/zero2.json}" "$@"

#!/usr/bin/env bash
# Several nodes. Two modes (see ds_configs/README.md for NCCL settings):
#
#  ssh (default): run once on the first node of the hostfile; DeepSpeed starts every node over passwordless ssh.
#     launch/multi_node.sh --train_data ... --output_dir /shared/outputs/run1
#  no ssh: run on EVERY node with its own NODE_RANK (0 on the master); MASTER_ADDR = node 0's address.
#     NO_SSH=1 NODE_RANK=0 MASTER_ADDR=10.0.0.1 launch/multi_node.sh --train_data ...   # on node1
#     NO_SSH=1 NODE_RANK=1 MASTER_ADDR=10.0.0.1 launch/multi_node.sh --train_data ...   # on node2
#
# output_dir must be on a filesystem every node sees (checkpoints are written by every rank).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE="${HOSTFILE:-hostfile}"
DS_CONFIG="${DS_CONFIG:-ds_configs/zero2.json}"
MASTER_PORT="${MASTER_PORT:-29500}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
if [[ "${NO_SSH:-0}" == "1" ]]; then
    : "${NODE_RANK:?set NODE_RANK, 0 to nodes-1, on every node}" "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
    exec deepspeed --hostfile "$HOSTFILE" --no_ssh --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" \
        --master_port "$MASTER_PORT" higgs_ds/train.py --deepspeed "$DS_CONFIG" "$@"
fi
# forward the NCCL/python environment to the remote nodes (DeepSpeed reads .deepspeed_env)
env | grep -E '^(NCCL_|PYTHONPATH=|HF_|HIGGS_DS_)' > .deepspeed_env || true
exec deepspeed --hostfile "$HOSTFILE" --master_port "$MASTER_PORT" ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"} \
    higgs_ds/train.py --deepspeed "$DS_CONFIG" "$@"

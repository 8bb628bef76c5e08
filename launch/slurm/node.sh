#!/bin/bash
# One node's share of a multi-node run: one `accelerate launch` starting GPUS workers.
# multinode.sbatch runs it on every node through srun; the tests run it twice on one
# machine (2 "nodes" on loopback) to exercise exactly this command.
#
# Needs: SLURM_NNODES, SLURM_NODEID, MASTER_ADDR, MASTER_PORT; optional GPUS (workers
# per node, default 8) and ACCELERATE_CONFIG (default launch/zero3.yaml).
#   bash launch/slurm/node.sh CONFIG [run-config overrides...]
set -euo pipefail
: "${SLURM_NNODES:?} ${SLURM_NODEID:?} ${MASTER_ADDR:?} ${MASTER_PORT:?}"
CONFIG="${1:?usage: node.sh CONFIG [overrides...]}"
shift
GPUS="${GPUS:-8}"
exec accelerate launch \
  --config_file "${ACCELERATE_CONFIG:-launch/zero3.yaml}" \
  --num_machines "$SLURM_NNODES" \
  --num_processes "$((SLURM_NNODES * GPUS))" \
  --machine_rank "$SLURM_NODEID" \
  --main_process_ip "$MASTER_ADDR" \
  --main_process_port "$MASTER_PORT" \
  -m distrec.train --config "$CONFIG" "$@"

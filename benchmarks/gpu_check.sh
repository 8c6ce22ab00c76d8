#!/usr/bin/env bash
# The prepared device check for full-scale CIFAR-10-LT (one GPU, one call, about 10 minutes):
# the speed ladder, then 200-epoch runs of CE, LA and ELM, each writing results.json under $OUT.
#
# Here, first:   python tools/make_carry_npz.py        (writes .carry/cifar10_lt_rho100.npz, ~60 MiB)
# On the device: bash benchmarks/gpu_check.sh          (with .carry carried; OUT set by the tool)
# Back here:     python tools/collect_gpu_results.py DIR   (writes data/results/cifar_lt_gpu.json)
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}
NPZ=${NPZ:-.carry/cifar10_lt_rho100.npz}
EPOCHS=${EPOCHS:-200}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 240 python3 -m elm_lite bench --npz "$NPZ" --epochs 2 2>&1 | tee "$OUT/ladder.txt"
for loss in ${LOSSES:-la ce elm}; do
  timeout 400 python3 -m elm_lite train --npz "$NPZ" --loss "$loss" --epochs "$EPOCHS" --compile \
    --out "$OUT/$loss" 2>&1 | tail -3
done

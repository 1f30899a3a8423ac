#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with one NVIDIA GPU (about 12 min):
#   1. trainer throughput on CUDA: the MLP on digits, conv at 28/64/96 px on shapes;
#   2. population training on CUDA: trials per hour at K = 1..16 against 1, 2 and 4 solo
#      trials per GPU (fractional GPUs), GPU memory per member;
#   3. a two-trial sweep sharing one GPU (--gpus-per-trial 0.5) into SQLite.
# Prerequisite: the project installed with a CUDA build of torch, e.g.
#   pip install torch --index-url https://download.pytorch.org/whl/cu126 && pip install -e '.[all]'
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (figures go to OUT_DIR, default benchmarks/out/gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/out/gpu}"
mkdir -p "$OUT"
python - <<'PY' || { echo "gpu_check: torch sees no CUDA device; install a CUDA build of torch"; exit 2; }
import torch
assert torch.cuda.is_available()
print("gpu_check:", torch.__version__, torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"

step() {  # name, time limit (s), command...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
}

step throughput_mlp 120 python benchmarks/trainer_throughput.py --device cuda --epochs 6 --repeats 2
step throughput_conv 240 python benchmarks/trainer_throughput.py --arch conv --device cuda \
  --samples 20000 --sizes 28 64 96
step population 300 python benchmarks/population.py --device cuda --solo-parallel 1,2,4 \
  --ks 1,2,4,8,16 --out "$OUT/population_gpu.json"
step sweep_half_gpu 180 stagetune sweep --smoke-test --n-trials 2 --gpus-per-trial 0.5 \
  --storage "sqlite:///$OUT/gpu_sweep.db" --study gpu-half --work-dir "$OUT/tune"
step status 60 stagetune status --storage "sqlite:///$OUT/gpu_sweep.db" --study gpu-half

#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with one NVIDIA GPU (under 8 min),
# with torch alone (the project on PYTHONPATH; no Ray or Optuna needed):
#   1. trainer throughput on CUDA: the MLP on digits, conv at 28/64/96 px on shapes;
#   2. population training on CUDA: trials per hour at K = 1..16 against 1, 2 and 4 solo
#      trials per GPU, GPU memory per member (settings from population_settings.json);
#   3. replicates: trials of 3 paired seeds as 3 solo runs against populations of 4 x 3;
#   4. the full evaluation of 1 and 8 models with the probes fit on the device;
#   5. populations that refill: 32 trials of differing budgets through K = 4 and 8 slots,
#      refilling against populations trained one after another.
# Prerequisite: a CUDA build of torch with numpy, scikit-learn and tqdm, e.g.
#   PYTHONPATH=. bash benchmarks/gpu_check.sh
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (figures go to OUT_DIR, default benchmarks/out/gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
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

# torch alone (a device image may have neither Ray nor Optuna): throughput, population
# trials per hour, replicates, the evaluation with its probes fit on the device, and
# refill; 7.8 min at most
step throughput_mlp 80 python benchmarks/trainer_throughput.py --device cuda --epochs 6 --repeats 2
step throughput_conv 110 python benchmarks/trainer_throughput.py --arch conv --device cuda \
  --samples 20000 --sizes 28 64 96
step population 110 python benchmarks/population.py --device cuda --solo-parallel 1,2,4 \
  --ks 1,2,4,8,16 --solo-trials 8 --out "$OUT/population_gpu.json"
step replicates 60 python benchmarks/population.py --device cuda --replicates 3 --ks 4 \
  --solo-trials 4 --solo-parallel 1 --pop-parallel 1 --out "$OUT/replicates_gpu.json"
step evaluation_1 30 python benchmarks/evaluation_time.py --device cuda --threads 2 --repeat 3
step evaluation_8 30 python benchmarks/evaluation_time.py --device cuda --threads 2 --repeat 3 \
  --members 8
step refill 50 python benchmarks/population.py --device cuda --refill 32 --ks 4,8 \
  --out "$OUT/refill_gpu.json"

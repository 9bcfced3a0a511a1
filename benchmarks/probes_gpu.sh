#!/usr/bin/env bash
# The probes on a GPU machine, in one go (about 10 minutes on one H100/H200 with 16 cores):
#   bash benchmarks/probes_gpu.sh [OUT_DIR]
# 1. kNN and the linear C sweep at medium and Kinetics-400 size on cuda: floor, ours and (kNN) faiss, each once, in
#    its own process; scikit-learn's kNN at both sizes and its warm-started sweep at medium size run on the CPU cores
#    as anchors (its sweep at Kinetics-400 size would take hours, so it is left out there);
# 2. label propagation: DAVIS-2017 val's frame counts and the real DAVIS-2016 sequences (benchmarks/labelprop_gpu.sh).
# Every table says which CPU, GPU and BLAS it ran on.
set -euo pipefail
OUT=${1:-probes-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python benchmarks/probes.py --device cuda --probes knn linear --sizes medium --repeat 1 \
    --out "$OUT/medium.json" | tee "$OUT/medium.txt"
python benchmarks/probes.py --device cuda --probes knn linear --sizes k400 --repeat 1 --without linear_sklearn \
    --out "$OUT/k400.json" | tee "$OUT/k400.txt"
bash benchmarks/labelprop_gpu.sh "$OUT/labelprop"

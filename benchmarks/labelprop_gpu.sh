#!/usr/bin/env bash
# Label propagation on a GPU machine, in one go (a few minutes on one H100/H200):
#   bash benchmarks/labelprop_gpu.sh [OUT_DIR] [extra arguments for benchmarks/labelprop.py, e.g. --device cpu --frames 8]
# 1. DAVIS-2017 val (30 sequences at their frame counts from ../shared/realdata/splits/davis, about 2,000 frames) on
#    random-projection features of a 60 x 107 grid of 512 channels (CRW's ResNet res4 at 480p), crw preset, float32
#    with TF32 off: total seconds, seconds per frame, and the share of mask pixels equal to the CPU's float32 result
#    on the first two sequences;
# 2. both presets on the two real DAVIS-2016 sequences (64 channels), with the masks' hash.
set -euo pipefail
OUT=${1:-labelprop-gpu}
shift || true
EXTRA=("$@")
DEVICE=cuda
for ((i = 0; i < ${#EXTRA[@]}; i++)); do [[ ${EXTRA[i]} == --device ]] && DEVICE=${EXTRA[i + 1]}; done
mkdir -p "$OUT"
if [[ $DEVICE == cuda* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
python benchmarks/labelprop.py --device cuda --davis2017 --dims 512 --check 2 --threads "$(nproc)" "${EXTRA[@]}" \
    | tee "$OUT/davis2017.txt"
python benchmarks/labelprop.py --device cuda --presets crw dino --threads "$(nproc)" "${EXTRA[@]}" | tee "$OUT/davis2016.txt"

#!/usr/bin/env bash
# The temporal heads benchmark on a GPU machine, in one go (well under 10 minutes on one H100/H200):
#   bash benchmarks/temporal_heads_gpu.sh [OUT_DIR]        (default: $OUT/temporal-heads if OUT is set, else temporal-heads-gpu)
# MS-TCN (segmentation defaults) and ActionFormer (thumos14 and activitynet presets) at input widths 768 and 1024:
# training steps at the reference batch sizes, whole-video inference (Soft-NMS included) at 2,304 and 10,000 snippets,
# one training step on a 10,000-snippet video, and torch.cuda.max_memory_allocated for each; 1 warm-up + 5 timed steps.
# The Python run is cut at 480 s so that the whole script fits a 10-minute device call; what it printed until then is
# kept in temporal_heads.md.
set -uo pipefail
DEST=${1:-${OUT:+$OUT/temporal-heads}}
DEST=${DEST:-temporal-heads-gpu}
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$DEST/gpu.txt"
timeout 480 python benchmarks/temporal_heads.py --device cuda --dim 768 1024 --heads tcn thumos14 activitynet \
    --lengths 2304 10000 --repeats 5 --out "$DEST/temporal_heads.json" 2>&1 | tee "$DEST/temporal_heads.md"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "cut at 480 s: the table above is partial" | tee -a "$DEST/temporal_heads.md"
exit "$status"

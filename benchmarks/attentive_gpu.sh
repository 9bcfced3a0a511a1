#!/usr/bin/env bash
# The attentive-probe benchmark on a GPU machine, in one go (about 8 minutes on one H100/H200):
#   bash benchmarks/attentive_gpu.sh [OUT_DIR]
# 1. throughput and peak memory at the demo's grid, the pooled K400 grid and the full V-JEPA ViT-L/16 K400 grid
#    (1568 x 1024 fp16 per clip), 1 and 20 heads, 8 reader workers, bf16 autocast;
# 2. the same seed twice on the GPU: the records' numbers must be identical (determinism on one device).
set -euo pipefail
OUT=${1:-attentive-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python benchmarks/attentive.py --device cuda --sizes small k400-pooled k400 --clips 512 --heads 1 20 \
    --epochs 1 --workers 8 --folder "$OUT/files" --out "$OUT/attentive.json" | tee "$OUT/attentive.md"
rm -rf "$OUT/files"
evalharness synth "$OUT/data" --quiet
evalharness extract -m builtin:stats -p synthetic-motion-tokens -d "$OUT/data" -o "$OUT/tokens.h5" --quiet --device cuda
for run in 1 2; do
  evalharness probe attentive "$OUT/tokens.h5" -p synthetic-motion-tokens -d "$OUT/data" --out "$OUT/run$run" \
      --device cuda --quiet
done
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
a, b = (json.loads(next((out / f"run{i}").rglob("attentive.json")).read_text()) for i in (1, 2))
same = a["metrics"] == b["metrics"] and a["chosen"]["seeds"] == b["chosen"]["seeds"]
print(f"same seed twice on the GPU: {'identical' if same else 'DIFFERENT'}; top1 {a['metrics']['top1']['value']:.4f}")
PY

#!/usr/bin/env bash
# The main job on the embedded default device (a TVM RPC tracker + server of this CPU on
# 127.0.0.1): export a SegFormer-B0-class model, tune and compile it for `host` over RPC, run
# it over RPC with a numeric check, and report FPS with a per-kernel breakdown.
# Environment knobs: EDGESEG_DEMO_SIZE (input size, default 256), EDGESEG_DEMO_TRIALS (default 300).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
SIZE="${EDGESEG_DEMO_SIZE:-256}"
TRIALS="${EDGESEG_DEMO_TRIALS:-300}"
OUT="out/demo"
mkdir -p "$OUT"

echo "== 1/3 export segformer-b0 (pvt_v2_b0 + all-MLP decoder, 150 classes) at ${SIZE}x${SIZE}"
python - "$SIZE" "$OUT/segformer-b0.onnx" <<'PY'
import sys
import torch
from prune.export import export_onnx
from prune.models import create_model
torch.manual_seed(0)
export_onnx(create_model("segformer-b0", num_classes=150), int(sys.argv[1]), sys.argv[2])
PY

echo "== 2/3 tune ($TRIALS MetaSchedule trials, measured over RPC) and compile for host"
python -m compile "$OUT/segformer-b0.onnx" --target host --trials "$TRIALS" -o "$OUT/segformer-b0-host"

echo "== 3/3 run it over RPC on the embedded device: check against ONNX Runtime, time, per kernel"
python -m runner bench "$OUT/segformer-b0-host" --check --per-kernel --out "$OUT/bench.json"
echo "results: $OUT/bench.json (artifact: $OUT/segformer-b0-host)"

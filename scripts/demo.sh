#!/usr/bin/env bash
# The main job: the whole edgeseg pipeline on the embedded default device, a TVM RPC tracker and
# server of this CPU on 127.0.0.1 (every measurement is of this CPU, never of a phone):
#   1. measure segformer-b0's layers over RPC and train the XGBoost latency predictor on them
#      (two anchor kernels per structure tuned into the device's tuning database, every other
#      kernel, and those of the unpruned network, given a schedule transferred from them);
#   2. train the unpruned network on the synthetic scenes (the dense reference), then prune it
#      with the bi-level method to half its predicted latency and fine-tune it; the pruned network
#      has trained twice as many steps as the reference (dense training, then search and
#      fine-tuning), so a second reference continues the dense one with the same schedule
#      (unpruned-x2: as many steps as the pruned network, in the same stages, without pruning);
#   3. compile the three for host with no search (--trials 0: every kernel's schedule is the
#      collection's, or transferred from it), and run them over RPC with a numeric check
#      against ONNX Runtime;
#   4. print the table (mIoU, predicted ms, measured ms, FPS, speed-up; under it what each row
#      was trained with) and write the plots.
# A rerun resumes: measured layers, finished training runs and tuned kernels are kept.
# Knobs (environment): EDGESEG_DEMO_SIZE (input px, default 128), EDGESEG_DEMO_SAMPLES (random
# pruned variants whose layers are measured besides the unpruned ones, default 2),
# EDGESEG_DEMO_TRIALS (MetaSchedule trials per anchor kernel of the collection, default 2: the first round takes one each, the second goes by latency share), EDGESEG_DEMO_STEPS
# (search and fine-tuning steps per epoch, default 40), EDGESEG_DEMO_OUT (default out/pipeline).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
SIZE="${EDGESEG_DEMO_SIZE:-128}"
SAMPLES="${EDGESEG_DEMO_SAMPLES:-2}"
TRIALS="${EDGESEG_DEMO_TRIALS:-2}"
STEPS="${EDGESEG_DEMO_STEPS:-40}"
OUT="${EDGESEG_DEMO_OUT:-out/pipeline}"
PREDICTOR="$OUT/latency/predictor"
TRAIN=(--model segformer-b0 --data synthetic --input-size "$SIZE" --predictor "$PREDICTOR"
       --epochs 2 --search-steps "$STEPS" --finetune-steps "$STEPS" --train-scenes 800 --val-scenes 64)
started=$SECONDS
step() { echo; echo "== [$(( (SECONDS - started) / 60 )) min] $*"; }
mkdir -p "$OUT/latency"

step "1/5 measure segformer-b0's layers at ${SIZE}px over RPC ($TRIALS trial(s) per anchor kernel, the rest transferred) and train the predictor"
python -m latency_model collect --model segformer-b0 --input-size "$SIZE" --samples "$SAMPLES" \
    --trials-per-layer "$TRIALS" -o "$OUT/latency/data.jsonl"
python -m latency_model train "$OUT/latency/data.jsonl" -o "$PREDICTOR"
python -m latency_model evaluate "$PREDICTOR" "$OUT/latency/data.jsonl" --plot "$OUT/latency/scatter.png"

step "2/5 train the unpruned network on synthetic scenes (the dense reference)"
python -m prune "${TRAIN[@]}" --method dense -o "$OUT/unpruned"

step "3/5 prune it by bi-level optimization to half its predicted latency, then fine-tune"
python -m prune "${TRAIN[@]}" --method bilevel --budget-fraction 0.5 \
    --weights "$OUT/unpruned/weights.safetensors" -o "$OUT/pruned"

step "3/5 (b) the reference with as many steps as the pruned network: the dense run continued, unpruned, with the same schedule"
python -m prune "${TRAIN[@]}" --method dense --weights "$OUT/unpruned/weights.safetensors" -o "$OUT/unpruned-x2"

for net in unpruned unpruned-x2 pruned; do
  step "4/5 compile the $net network for host (schedules from the collection: exact or transferred) and run it over RPC"
  python -m compile "$OUT/$net/model.onnx" --target host --trials 0 -o "$OUT/$net/artifact"
  python -m runner bench "$OUT/$net/artifact" --check --out "$OUT/$net/bench.json"
done

step "5/5 unpruned (both references) vs pruned"
python -m prune.compare "$OUT/unpruned" "$OUT/unpruned-x2" "$OUT/pruned" -o "$OUT"
echo "plots: $OUT/comparison.png, $OUT/latency/scatter.png, $OUT/unpruned/curves.png, $OUT/unpruned-x2/curves.png, $OUT/pruned/curves.png"
echo "main job done in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"

#!/usr/bin/env bash
# The main job: the whole edgeseg pipeline on the embedded default device, a TVM RPC tracker and
# server of this CPU on 127.0.0.1 (every measurement is of this CPU, never of a phone), as one
# call of `python -m prune.pipeline` (its --help tells every stage and option):
#   1. measure segformer-b0's layers over RPC (two anchor kernels per structure tuned into the
#      device's tuning database, every other kernel, and those of the unpruned network, given a
#      schedule transferred from them) and train the XGBoost latency predictor on them;
#   2. train the unpruned network on the synthetic scenes (the dense reference), compile it and run
#      it over RPC; prune it with the bi-level method to half its measured latency and fine-tune it,
#      compile and run it in turns with the reference; while a round misses the budget by more
#      than 5%, project the first round's search onto an aim lower or higher by the factor it
#      missed by, and once one round was over and one under, between them (at most 3 rounds,
#      ~2.5-3.5 min each; runs 21-23 in bench/results landed in 1, 2 and 1); train a second
#      reference as many steps as the pruned network (unpruned-x2). Every compile is for host with no search (every kernel's schedule
#      is the collection's, or transferred from it), every run has a numeric check against ONNX
#      Runtime;
#   3. OUT/pruned links to the round that ships (the first that landed, else the closest);
#   4. write OUT/report.md: the table, how each figure was measured, the stages' commands.
# A rerun resumes: finished stages are skipped, and each resumes its own unfinished work.
# Knobs (environment): EDGESEG_DEMO_SIZE (input px, default 128), EDGESEG_DEMO_SAMPLES (random
# pruned variants whose layers are measured besides the unpruned and smallest network, default 2),
# EDGESEG_DEMO_TRIALS (MetaSchedule trials per anchor kernel, default 2: the first round takes one
# each, the second goes by latency share), EDGESEG_DEMO_STEPS (search and fine-tuning steps per
# epoch, default 40), EDGESEG_DEMO_OUT (default out/pipeline).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
started=$SECONDS
python -m prune.pipeline --model segformer-b0 --data synthetic --input-size "${EDGESEG_DEMO_SIZE:-128}" \
    --budget-fraction 0.5 --max-rounds 3 --samples "${EDGESEG_DEMO_SAMPLES:-2}" --trials-per-layer "${EDGESEG_DEMO_TRIALS:-2}" \
    --epochs 2 --search-steps "${EDGESEG_DEMO_STEPS:-40}" --finetune-steps "${EDGESEG_DEMO_STEPS:-40}" \
    --train-scenes 800 --val-scenes 64 -o "${EDGESEG_DEMO_OUT:-out/pipeline}"
echo "main job done in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"

#!/bin/sh
# The README's speed table: our CrossViT against timm's with the same weights, side by side,
# on whatever machine runs it. Usage: benchmarks/speed_vs_timm.sh [THREADS] (default 2).
# About 4 minutes per model on 2 cores; results land in benchmarks/results/.
set -e
threads=${1:-2}
out=benchmarks/results
mkdir -p "$out"
for model in crossvit_9_240 crossvit_15_240; do
  .venv/bin/crossvit bench "$model" --compare timm --threads "$threads" \
    --mode latency infer train --precision fp32 bf16 --rounds 5 --round-seconds 2 \
    --csv "$out/$model-$threads-threads.csv" | tee "$out/$model-$threads-threads.txt"
done

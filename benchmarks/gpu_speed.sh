#!/bin/sh
# The GPU rows of the README's speed table: our CrossViT against timm's with the same weights,
# eager (fp32 and bf16 autocast), replayed as plain CUDA graphs (--cuda-graph), compiled, and
# compiled with CUDA graphs (reduce-overhead).
# Usage: benchmarks/gpu_speed.sh [RESULTS_DIR] (default benchmarks/results); about 6 minutes on
# one H100/H200. Runs from a checkout without installing: PYTHONPATH=src, the python in $PYTHON.
set -e
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
bench() { name=$1; shift; $py -m crossvit bench "$@" --compare timm --device cuda --rounds 5 --round-seconds 0.5 \
  --csv "$out/gpu-$name.csv"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
for model in ${MODELS:-crossvit_9_240 crossvit_15_240}; do
  bench "$model-eager" "$model" --mode latency infer train --precision fp32 bf16
  bench "$model-cuda-graph" "$model" --mode latency infer --precision fp32 bf16 --cuda-graph
done
bench crossvit_9_240-eager-b256 crossvit_9_240 --mode infer train --precision bf16 --batch-size 256
bench crossvit_9_240-compiled crossvit_9_240 --mode infer train --precision bf16 --compile on
bench crossvit_9_240-cudagraphs crossvit_9_240 --mode latency infer --precision bf16 --compile on \
  --compile-mode reduce-overhead

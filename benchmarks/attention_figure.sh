#!/usr/bin/env bash
# The README's attention figure: where each branch's CLS token looks in a Fashion-MNIST model,
# on one test image (its index in the test split, default 0), with attention rollout.
#
#   benchmarks/attention_figure.sh runs/demo-fashion-mnist/best.pth [INDEX]
#
# Writes docs/attention_fashion_mnist.png (the overview figure of `crossvit attention`).
# Needs Fashion-MNIST (`make fashion-mnist`); PYTHON defaults to the checkout's .venv.
set -euo pipefail

checkpoint=${1:?usage: benchmarks/attention_figure.sh CHECKPOINT [TEST_IMAGE_INDEX]}
index=${2:-0}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The test image as a PNG named after its true class, so the figure's title shows truth and prediction.
image=$("$python" - "$index" "$work" <<'PY'
import sys
from pathlib import Path

from PIL import Image

from crossvit.data.fashion_mnist import FashionMNIST
from crossvit.dataset_classes import FASHION_MNIST_CLASSES

index, folder = int(sys.argv[1]), Path(sys.argv[2])
test = FashionMNIST(None, "val")
truth = FASHION_MNIST_CLASSES[int(test.labels[index])].replace("/", "-").replace(" ", "-")
path = folder / f"test{index}-{truth}.png"
Image.fromarray(test.images[index]).save(path)
print(path)
PY
)

"$python" -m crossvit attention "$checkpoint" "$image" --rollout --output "$work/maps"
mkdir -p docs
cp "$work/maps/attention.png" docs/attention_fashion_mnist.png
echo "figure: docs/attention_fashion_mnist.png"

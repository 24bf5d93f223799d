#!/usr/bin/env bash
# The main job: set up, build, and run the pipeline so far on Fashion-MNIST (from
# Debian's dataset-fashion-mnist): train the book's 512-10 model with `kiln train`,
# export it as ONNX, run the .onnx on the test split with kiln's runtime
# (`kiln predict`) and report its accuracy. Outputs land in build/demo/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
out=build/demo
mkdir -p "$out"
kiln=./build/tools/kiln

echo "== 1. train (examples/specs/fashion_mnist.json: 784-512-10, rmsprop, batch 128, 5 epochs)"
$kiln train examples/specs/fashion_mnist.json --data fashion_mnist \
  --history "$out/history.csv" --output "$out/fashion_mnist.onnx" --verbose 2
echo "== 2. inspect the exported model"
$kiln inspect "$out/fashion_mnist.onnx"
echo "== 3. predict the 10,000 test images with kiln's runtime"
$kiln predict "$out/fashion_mnist.onnx" --input fashion_mnist:test --output "$out/predictions.npy"
echo "demo: model $out/fashion_mnist.onnx, history $out/history.csv, predictions $out/predictions.npy"

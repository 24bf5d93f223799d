#!/usr/bin/env bash
# The main job: set up, build, and run the pipeline on Fashion-MNIST (from Debian's
# dataset-fashion-mnist): train the book's 512-10 model with `kiln train` and export
# it as ONNX; train it again with 80% of its weights pruned during training; quantize
# that one to int8 with its pruned weights stored compactly; run the int8 .onnx on the
# test split with kiln's runtime (`kiln predict`); and print the drift report of the
# pruned int8 model against the float one (`kiln drift`, failing beyond 1 accuracy
# point). It also draws the model and its training curves as SVG. Outputs land in
# build/demo/.
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
echo "== 2. inspect the exported model; draw it and its training curves"
$kiln inspect "$out/fashion_mnist.onnx"
$kiln plot-model "$out/fashion_mnist.onnx" -o "$out/model.svg" --show-shapes
$kiln plot "$out/history.csv" -o "$out/curves.svg"
echo "== 3. train again, pruning 80% of the weights during training (cubic ramp, then fine-tuning)"
$kiln train examples/specs/fashion_mnist.json --data fashion_mnist --prune 0.8 \
  --output "$out/fashion_mnist_pruned.onnx" --verbose 2
echo "== 4. quantize to int8 (static, per-channel weights, 500 calibration rows; pruned weights packed)"
$kiln quantize "$out/fashion_mnist_pruned.onnx" "$out/fashion_mnist_int8.onnx" \
  --calibrate fashion_mnist --prune 0.8
ls -l "$out/fashion_mnist.onnx" "$out/fashion_mnist_int8.onnx"
echo "== 5. predict the 10,000 test images with the pruned int8 model in kiln's runtime"
$kiln predict "$out/fashion_mnist_int8.onnx" --input fashion_mnist:test --output "$out/predictions.npy"
echo "== 6. drift: pruned int8 against float on the test split"
$kiln drift "$out/fashion_mnist.onnx" "$out/fashion_mnist_int8.onnx" --data fashion_mnist:test \
  --max-drop 0.01 --junit "$out/drift.xml"
echo "demo: models in $out (float, pruned, int8), history $out/history.csv," \
  "predictions $out/predictions.npy, drift report $out/drift.xml," \
  "pictures $out/model.svg and $out/curves.svg"

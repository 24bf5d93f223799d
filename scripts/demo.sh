#!/usr/bin/env bash
# The main job: set up, build, and run the pipeline on Fashion-MNIST (from Debian's
# dataset-fashion-mnist): train the book's 512-10 model with `kiln train`, then
# report its test accuracy. Outputs land in build/demo/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
mkdir -p build/demo
./build/tools/kiln train examples/specs/fashion_mnist.json --data fashion_mnist \
  --history build/demo/history.csv --output build/demo/fashion_mnist.kiln --verbose 2 --json \
  | tee build/demo/result.json
echo "demo: model build/demo/fashion_mnist.kiln, history build/demo/history.csv"

#!/usr/bin/env bash
# The tests: set up, build with warnings as errors, run every ctest test (unit,
# command, round trip with ONNX Runtime / onnx.checker / PyTorch files, ONNX backend
# node tests, book accuracy), the unit tests again under AddressSanitizer +
# UndefinedBehaviorSanitizer, short fuzz runs of the ONNX reader, of the runtime
# loading and running untrusted files, of the trainer's file readers and of `kiln plot`,
# and the runtime's
# tests for aarch64 and armhf under qemu.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash scripts/setup-test.sh
jobs="$(nproc)"

cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON >/dev/null
cmake --build build-test -j"$jobs"
(cd build-test && ctest --output-on-failure -j"$jobs")

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Asan -DKILN_WERROR=ON -DKILN_BUILD_EXAMPLES=OFF \
  -DKILN_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -LE slow)

bash scripts/fuzz.sh "${KILN_FUZZ_SECONDS:-25}"

bash scripts/setup-arm.sh
bash scripts/test-arm.sh

#!/usr/bin/env bash
# The runtime on ARM: cross-builds kiln_infer and its tests (tests/infer) for aarch64 and
# armhf with Debian's cross compilers (warnings as errors, Release) and runs them with
# ctest under qemu-user. The golden-output test there checks that float outputs match
# the x86 ones within 1e-5 on every kernel path. Trainer and examples are not built.
# Usage: scripts/test-arm.sh [aarch64|armhf ...]   (default: both)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup-arm.sh
jobs="$(nproc)"

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(aarch64 armhf)
for arch in "${arches[@]}"; do
  case "$arch" in
    aarch64|armhf) ;;
    *) echo "test-arm: unknown architecture '$arch' (aarch64 or armhf)" >&2; exit 2 ;;
  esac
  start=$SECONDS
  echo "== $arch: configure, build, test under qemu"
  cmake -S . -B "build-$arch" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchain-$arch.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON \
    -DKILN_BUILD_TRAIN=OFF -DKILN_BUILD_EXAMPLES=OFF -DKILN_BUILD_BENCH=OFF >/dev/null
  cmake --build "build-$arch" -j"$jobs"
  (cd "build-$arch" && ctest --output-on-failure -j"$jobs")
  echo "== $arch: done in $((SECONDS - start)) s"
done

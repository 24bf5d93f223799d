#!/bin/sh
# Builds the libFuzzer targets with clang into build-fuzz/ and runs the ONNX reader's
# fuzzer over its seed corpus for N seconds (default 60).
#   scripts/fuzz.sh [seconds] [extra libFuzzer flags...]
# Needs clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
# New inputs go to build-fuzz/corpus/onnx_read (the seeds in git stay untouched);
# a crash leaves build-fuzz/crash-* and a nonzero exit.
set -eu
secs=${1:-60}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang)" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Debug \
  -DKILN_BUILD_FUZZ=ON -DKILN_BUILD_TRAIN=OFF -DKILN_BUILD_EXAMPLES=OFF -DKILN_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target fuzz_onnx_read -j"$(nproc 2>/dev/null || echo 2)"

work="$build/corpus/onnx_read"
mkdir -p "$work"
cd "$build"
"$build/tests/fuzz/fuzz_onnx_read" -max_total_time="$secs" -max_len=65536 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 "$@" "$work" "$root/tests/fuzz/corpus/onnx_read"

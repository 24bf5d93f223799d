#!/bin/sh
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each over its seed
# corpus for N seconds (default 60): fuzz_onnx_read (the ONNX reader), fuzz_session
# (the reader, kiln_session_create and one run: what a runtime does with an untrusted
# .onnx file), fuzz_train_files (the trainer's .npy, CSV, checkpoint, training-state
# and JSON-spec readers) and fuzz_plot (`kiln plot` on any History CSV).
#   scripts/fuzz.sh [seconds] [extra libFuzzer flags...]
# Needs clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
# New inputs go to build-fuzz/corpus/<target> (the seeds in git stay untouched);
# a crash leaves build-fuzz/crash-* and a nonzero exit.
set -eu
secs=${1:-60}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang)" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Debug \
  -DKILN_BUILD_FUZZ=ON -DKILN_BUILD_TRAIN=ON -DKILN_BUILD_EXAMPLES=OFF -DKILN_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target fuzz_onnx_read fuzz_session fuzz_train_files fuzz_plot -j"$(nproc 2>/dev/null || echo 2)"

cd "$build"
# A model may declare tensors too large to allocate: that must be a clear error, so
# malloc returning NULL is part of what is tested (not an ASan abort).
ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1}
export ASAN_OPTIONS
# fuzz_session also starts from the reader's seeds (other tools' models).
for target in onnx_read session train_files plot; do
  work="$build/corpus/$target"
  mkdir -p "$work"
  seeds="$root/tests/fuzz/corpus/$target"
  [ "$target" = session ] && seeds="$seeds $root/tests/fuzz/corpus/onnx_read"
  quiet=""
  [ "$target" = plot ] && quiet="-close_fd_mask=2" # the command's own error messages
  echo "== fuzz_$target, $secs s"
  # shellcheck disable=SC2086
  "$build/tests/fuzz/fuzz_$target" -max_total_time="$secs" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 $quiet "$@" "$work" $seeds
done

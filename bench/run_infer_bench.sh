#!/bin/bash
# The inference benchmark, one command: the four book MLPs (IMDB, Reuters, California
# housing, Fashion-MNIST) as .onnx (Gemm, opset 13, symbolic batch, seeded weights),
# run by kiln's runtime (bench_infer) and by ONNX Runtime (bench_infer_ort.js,
# onnxruntime-node) on the same files in the same run, alternating kiln and ORT.
# Prints throughput ratios, the token-id path, peak RSS and sizes. Installs nothing.
#
#   bench/run_infer_bench.sh [--rounds N] [--min-time S] [--models "imdb reuters ..."]
#                            [--markdown]
#
# Each cell: warm-up, then 5 repetitions filling --min-time seconds (default 0.5), the
# median; each process is run --rounds times (default 3), the median of those is quoted.
# Build: build-bench/ (Release; $KILN_BENCH_BUILD to change), made if needed. ORT:
# tests/integration/ort/node_modules (npm install --ignore-scripts there) or
# $KILN_ORT_NODE_MODULES. Every JSON line is kept in BUILD/infer_bench.jsonl.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${KILN_BENCH_BUILD:-build-bench}
ROUNDS=3
MIN_TIME=0.5
MODELS="imdb reuters housing fashion_mnist"
MARKDOWN=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --min-time) MIN_TIME=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --markdown) MARKDOWN=--markdown; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_infer_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# --- node + onnxruntime-node ----------------------------------------------------------
if ! command -v node >/dev/null; then
  echo "node is not installed (sudo apt-get install nodejs)" >&2; exit 1
fi
ORT_DIR=${KILN_ORT_NODE_MODULES:-}
if [ -z "$ORT_DIR" ]; then
  for d in bench/node_modules tests/integration/ort/node_modules; do
    [ -d "$d/onnxruntime-node" ] && ORT_DIR=$ROOT/$d && break
  done
fi
if [ -z "$ORT_DIR" ] || [ ! -d "$ORT_DIR/onnxruntime-node" ]; then
  echo "onnxruntime-node is not installed: (cd tests/integration/ort && npm install --ignore-scripts)" >&2
  exit 1
fi
export KILN_ORT_NODE_MODULES=$ORT_DIR
ORT_VERSION=$(node -e "console.log(require('$ORT_DIR/onnxruntime-node/package.json').version)")

# --- build ---------------------------------------------------------------------------------
# (Re)configured every time so a tree configured before these targets existed learns them.
if [ -f "$BUILD/CMakeCache.txt" ]; then CFG=(); else CFG=(-DCMAKE_BUILD_TYPE=Release); fi
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" "${CFG[@]}" >"$BUILD/bench_infer_configure.log" 2>&1 ||
  { cat "$BUILD/bench_infer_configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j2 --target make_book_onnx bench_infer bench_infer_predict >"$BUILD/bench_infer_build.log" 2>&1 ||
  { tail -30 "$BUILD/bench_infer_build.log" >&2; exit 1; }
BIN=$BUILD/bench
MD=$BUILD/bench_infer_models
mkdir -p "$MD"
"$BIN/make_book_onnx" "$MD" 2>"$MD/tokens.txt" || exit 1
OUT=$BUILD/infer_bench.jsonl
: >"$OUT"

tok_arg() { case "$1" in imdb|reuters) echo "--tokens $MD/$1_tokens.bin" ;; esac; }

# --- throughput: rounds x models, kiln and ORT alternating (order flips each round) -----
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS ..." >&2
  for m in $MODELS; do
    # shellcheck disable=SC2046
    K() { "$BIN/bench_infer" speed "$MD/$m.onnx" "$m" $(tok_arg "$m") --min-time "$MIN_TIME" | sed "s/^{/{\"round\":$round,/" >>"$OUT"; }
    O() { node bench/bench_infer_ort.js speed "$MD/$m.onnx" "$m" $(tok_arg "$m") --min-time "$MIN_TIME" | sed "s/^{/{\"round\":$round,/" >>"$OUT"; }
    if [ $((round % 2)) -eq 1 ]; then K; O; else O; K; fi
  done
  # onnxruntime-node's per-call cost: an Identity model at batch 1.
  node bench/bench_infer_ort.js speed "$MD/identity.onnx" identity --batches 1 --min-time "$MIN_TIME" |
    sed "s/^{/{\"round\":$round,/" >>"$OUT"
done

# --- peak RSS: load one model, run 100 batches of 1024 rows, 1 thread -----------------
echo "peak RSS ..." >&2
for round in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    "$BIN/bench_infer" mem "$MD/$m.onnx" "$m" --batch 1024 --runs 100 >>"$OUT"
    node bench/bench_infer_ort.js mem "$MD/$m.onnx" "$m" --batch 1024 --runs 100 --threads 1 >>"$OUT"
  done
done

# --- sizes --------------------------------------------------------------------------------
LIB=$BUILD/infer/libkiln_infer.a
TMP=$(mktemp -d)
cp "$LIB" "$TMP/libkiln_infer.a" && strip --strip-unneeded "$TMP/libkiln_infer.a"
cp "$BIN/bench_infer_predict" "$TMP/predict" && strip "$TMP/predict"
LIB_BYTES=$(stat -c %s "$TMP/libkiln_infer.a")
PRED_BYTES=$(stat -c %s "$TMP/predict")
PRED_DYN=$(ldd "$BIN/bench_infer_predict" 2>/dev/null | awk '/=>/ {print $1}' | tr '\n' ' ')
ORT_SO=$(find "$ORT_DIR/onnxruntime-node/bin" -name 'libonnxruntime.so*' -path '*linux/x64*' | head -1)
ORT_BYTES=$( [ -n "$ORT_SO" ] && stat -L -c %s "$ORT_SO" || echo 0)
echo "1 2 3 4 5 6 7 8" | "$TMP/predict" "$MD/housing.onnx" >/dev/null || echo "warning: predict program failed" >&2
rm -rf "$TMP"
printf '{"sizes":1,"lib_stripped":%s,"predict_stripped":%s,"predict_dynamic":"%s","ort_so":%s}\n' \
  "$LIB_BYTES" "$PRED_BYTES" "$PRED_DYN" "$ORT_BYTES" >>"$OUT"

# --- machine ------------------------------------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
TOKENS=$(sed 's#^[^:]*/##' "$MD/tokens.txt" | tr '\n' ';')
FLAGS=$(for f in avx2 fma avx512f avx512_vnni; do grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f"; done)
printf '{"machine":1,"cpu":"%s","cores":%s,"flags":"%s","ort_version":"%s","node":"%s","tokens":"%s"}\n' \
  "$CPU" "$(nproc)" "$FLAGS" "$ORT_VERSION" "$(node --version)" "$TOKENS" >>"$OUT"

python3 bench/bench_infer_table.py $MARKDOWN "$OUT"

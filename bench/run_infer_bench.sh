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
BENCH_NAME=run_infer_bench.sh
BENCH_HELP_LINES='2,15p'
. "$(dirname "$0")/bench_infer_common.sh"
bench_parse_args "$@"
bench_find_ort
bench_build bench_infer make_book_onnx bench_infer bench_infer_predict
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

#!/bin/bash
# The int8 inference benchmark, one command: QDQ versions of the four book MLPs
# (make_book_onnx --int8: kiln_calibrate on 500 seeded rows shaped like the data, then
# kiln_quantize), run by kiln's runtime (bench_infer; the fused int8 path, docs/int8.md)
# and by ONNX Runtime (bench_infer_ort.js, graphOptimizationLevel 'all', which fuses
# QDQ into its int8 kernels) on the same files in the same run, alternating; plus kiln
# int8 vs kiln float on Fashion-MNIST. 1 and 2 threads, batch 1, 32, 1024, dense input.
# Checks that kiln int8 and ORT int8 agree (argmax over the 1024 benchmark rows; for the
# one-output models, the 0.5 threshold (IMDB) and the largest difference (housing)).
# ORT also runs NAME_int8u8.onnx, the same graph with uint8 activations (zero points
# + 128), the U8S8 format of ORT's x86 kernels (it fuses both files into QGemm, since
# kiln's QDQ weights carry their zero points; docs/benchmarks-int8.md). Sparse rows:
# kiln on Fashion-MNIST pruned to 80% unstructured (_int8_u80) and in 4x16 blocks
# (_int8_b80), both packed as kiln quantize --prune writes them, vs dense int8.
#
#   bench/run_int8_bench.sh [--rounds N] [--min-time S] [--models "imdb reuters ..."]
#                           [--markdown]
#
# Timing as run_infer_bench.sh: per cell warm-up, 5 repetitions filling --min-time
# seconds (default 0.5), the median; every process run --rounds times (default 3),
# order flipped each round, the median of the rounds quoted. Build: build-bench/
# (Release; $KILN_BENCH_BUILD), made if needed. ORT as run_infer_bench.sh. Every JSON
# line is kept in BUILD/int8_bench.jsonl.
set -u
BENCH_NAME=run_int8_bench.sh
BENCH_HELP_LINES='2,20p'
. "$(dirname "$0")/bench_infer_common.sh"
bench_parse_args "$@"
bench_find_ort
bench_build bench_int8 make_book_onnx bench_infer
BIN=$BUILD/bench
MD=$BUILD/bench_int8_models
mkdir -p "$MD"
"$BIN/make_book_onnx" "$MD" --int8 2>"$MD/make.txt" || { cat "$MD/make.txt" >&2; exit 1; }
OUT=$BUILD/int8_bench.jsonl
: >"$OUT"
tag() { sed "s/^{/{\"round\":$1,\"prec\":\"$2\",/"; }

# --- output agreement: one run on the 1024 benchmark rows, each side ------------------
for m in $MODELS; do
  "$BIN/bench_infer" speed "$MD/${m}_int8.onnx" "$m" --paths dense --threads 1 --batches 1 \
    --min-time 0.01 --dump "$MD/$m.kiln_int8.out" >/dev/null || exit 1
  "$BIN/bench_infer" speed "$MD/$m.onnx" "$m" --paths dense --threads 1 --batches 1 \
    --min-time 0.01 --dump "$MD/$m.kiln_float.out" >/dev/null || exit 1
  node bench/bench_infer_ort.js speed "$MD/${m}_int8.onnx" "$m" --threads 1 --batches 1 \
    --min-time 0.01 --dump "$MD/$m.ort_int8.out" >/dev/null || exit 1
  node bench/bench_infer_ort.js speed "$MD/${m}_int8u8.onnx" "$m" --threads 1 --batches 1 \
    --min-time 0.01 --dump "$MD/$m.ort_int8u8.out" >/dev/null || exit 1
  python3 - "$MD" "$m" >>"$OUT" <<'PY'
import json, sys
from array import array
d, m = sys.argv[1], sys.argv[2]
def load(side):
    a = array('f')
    with open(f"{d}/{m}.{side}.out", 'rb') as f:
        a.frombytes(f.read())
    return a
k, o, fl, u = load('kiln_int8'), load('ort_int8'), load('kiln_float'), load('ort_int8u8')
rows = 1024
w = len(k) // rows
def labels(a):
    if w == 1:
        return [a[r] > 0.5 for r in range(rows)]
    return [max(range(w), key=lambda j: a[r * w + j]) for r in range(rows)]
lk, lo, lf, lu = labels(k), labels(o), labels(fl), labels(u)
agree = sum(x == y for x, y in zip(lk, lo)) / rows
agree_u = sum(x == y for x, y in zip(lk, lu)) / rows
agree_f = sum(x == y for x, y in zip(lk, lf)) / rows
print(json.dumps({"agree": 1, "model": m, "rows": rows, "width": w,
                  "kiln_ort_agreement": agree, "kiln_int8_float_agreement": agree_f,
                  "kiln_ortu8_agreement": agree_u,
                  "kiln_ortu8_max_abs_diff": max(abs(x - y) for x, y in zip(k, u)),
                  "kiln_ort_max_abs_diff": max(abs(x - y) for x, y in zip(k, o)),
                  "kiln_int8_float_max_abs_diff": max(abs(x - y) for x, y in zip(k, fl))}))
PY
done

# --- throughput: rounds x models; kiln int8 and ORT int8 alternating, kiln float on
# Fashion-MNIST beside them (order flips each round) ------------------------------------
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS ..." >&2
  for m in $MODELS; do
    K() { "$BIN/bench_infer" speed "$MD/${m}_int8.onnx" "$m" --paths dense --min-time "$MIN_TIME" | tag "$round" int8 >>"$OUT"; }
    O() { node bench/bench_infer_ort.js speed "$MD/${m}_int8.onnx" "$m" --min-time "$MIN_TIME" | tag "$round" int8 >>"$OUT"
          node bench/bench_infer_ort.js speed "$MD/${m}_int8u8.onnx" "$m" --min-time "$MIN_TIME" | tag "$round" int8u8 >>"$OUT"; }
    F() { case "$m" in fashion_mnist)
      "$BIN/bench_infer" speed "$MD/$m.onnx" "$m" --paths dense --min-time "$MIN_TIME" | tag "$round" float >>"$OUT"
      for sp in u80 b80; do
        "$BIN/bench_infer" speed "$MD/${m}_int8_$sp.onnx" "$m" --paths dense --min-time "$MIN_TIME" | tag "$round" "int8_$sp" >>"$OUT"
      done ;; esac; }
    if [ $((round % 2)) -eq 1 ]; then K; O; F; else F; O; K; fi
  done
done

# --- machine ------------------------------------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
FLAGS=$(for f in avx2 fma avx512f avx512bw avx512_vnni avx_vnni; do grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f"; done)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"machine":1,"cpu":"%s","cores":%s,"flags":"%s","ort_version":"%s","node":"%s","load_end":"%s"}\n' \
  "$CPU" "$(nproc)" "$FLAGS" "$ORT_VERSION" "$(node --version)" "$LOAD" >>"$OUT"

python3 bench/bench_int8_table.py $MARKDOWN "$OUT"

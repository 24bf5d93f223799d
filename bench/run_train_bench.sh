#!/bin/bash
# The training benchmark, one command: trains the four book models (IMDB, Reuters,
# California housing, Fashion-MNIST) in kiln and in PyTorch (Debian's python3-torch) in
# the same run, one process per (model, variant), and prints per-epoch time ratios and
# peak memory. Installs nothing.
#
#   bench/run_train_bench.sh [--repeats N] [--epochs N] [--models "imdb reuters ..."]
#                            [--markdown]
#
# Data: $KILN_DATA_DIR, else ../shared/data beside the repository; Fashion-MNIST from
# /usr/share/datasets/fashion-mnist. Build: build-bench/ (Release), made if needed.
# Every run's JSON line is kept in build-bench/train_bench.jsonl.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3
BUILD=${KILN_BENCH_BUILD:-build-bench}
REPEATS=3
EPOCHS=
MODELS="imdb reuters housing fashion_mnist"
MARKDOWN=
QUIET_WAIT=${KILN_BENCH_QUIET_WAIT:-20} # seconds to wait for other load to pass
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --markdown) MARKDOWN=--markdown; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_train_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# --- PyTorch present? -----------------------------------------------------------------
if ! [ -x "$PY" ] || ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
  echo "PyTorch for Debian's python3 is not installed. Install it with:" >&2
  echo "  sudo apt-get install python3-torch python3-numpy libopenblas0-pthread" >&2
  exit 1
fi

# --- data ---------------------------------------------------------------------------------
DATA=${KILN_DATA_DIR:-../shared/data}
if [ ! -d "$DATA/imdb" ] || [ ! -d "$DATA/reuters" ] || [ ! -d "$DATA/housing" ]; then
  echo "data directory '$DATA' (from the repository root) has no imdb/, reuters/ or housing/:" >&2
  echo "point KILN_DATA_DIR at the shared data folder (see its README.md)" >&2
  exit 1
fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "Fashion-MNIST is not installed: sudo apt-get install dataset-fashion-mnist" >&2
  exit 1
fi

# --- the BLAS torch links (libblas.so.3) ---------------------------------------------
ARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
LIBBLAS=/usr/lib/$ARCH/libblas.so.3
LIBBLAS_REAL=$(readlink -f "$LIBBLAS" 2>/dev/null || echo "missing")
BLAS_OK=1
case "$LIBBLAS_REAL" in
  *openblas*) ;;
  *) BLAS_OK=0 ;;
esac

# --- the environment both sides run under ---------------------------------------------
# torch's OpenMP threads spin-wait and starve OpenBLAS' threads on 2 cores unless passive.
export OMP_WAIT_POLICY=PASSIVE
export OPENBLAS_NUM_THREADS=2
# OPENBLAS_CORETYPE is left as found (it changes OpenBLAS' kernels ~2x): both sides
# inherit the same value, and the report prints it.

CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
CPU_FM=$(lscpu 2>/dev/null | awk -F: '/^CPU family/{gsub(/ /,"",$2); f=$2} /^Model:/{gsub(/ /,"",$2); m=$2} END{if (f != "") printf "family %s model %s", f, m}')
CPU_ISA=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -oE '\b(avx2|avx512f|fma)\b' | sort -u | tr '\n' ' ' | sed 's/ $//')
echo "== kiln training benchmark: kiln vs PyTorch, same data, same models =="
echo "date:               $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "kiln commit:        $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- train include 2>/dev/null || echo ' (+ uncommitted changes in train/ or include/)')"
echo "CPU:                ${CPU:-unknown} (${CPU_FM:-?}; ${CPU_ISA:-no avx}), $(nproc) cores online"
echo "PyTorch:            $("$PY" -c 'import torch; print(torch.__version__)') (Debian python3-torch $(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null)), /usr/bin/python3 $("$PY" -c 'import platform; print(platform.python_version())')"
echo "libblas.so.3:       $LIBBLAS -> $LIBBLAS_REAL"
update-alternatives --display "libblas.so.3-$ARCH" 2>/dev/null | sed -n 's/^ *link currently points to/  (alternative: points to/p' | sed 's/$/)/'
if [ "$BLAS_OK" = 0 ]; then
  echo "WARNING: libblas.so.3 is not OpenBLAS: PyTorch from Debian runs on the slow reference"
  echo "         BLAS and the ratios below overstate kiln. Install OpenBLAS for both sides:"
  echo "           sudo apt-get install libopenblas0-pthread"
fi
echo "OPENBLAS_CORETYPE:  ${OPENBLAS_CORETYPE:-unset (OpenBLAS detects the CPU; detected kernels are printed below)}"
echo "threads:            OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, torch.set_num_threads(2)"
echo "data:               $DATA (Fashion-MNIST: /usr/share/datasets/fashion-mnist)"
echo "repeats:            $REPEATS (each run: median epoch time after the first epoch; table: median over repeats)"
echo

# --- build kiln (Release) -------------------------------------------------------------
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  echo "configuring $BUILD (Release) ..." >&2
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_BUILD_TESTS=OFF \
    -DKILN_BUILD_EXAMPLES=OFF >"$BUILD.configure.log" 2>&1 ||
    { cat "$BUILD.configure.log" >&2; exit 1; }
  rm -f "$BUILD.configure.log"
fi
if ! cmake --build "$BUILD" -j2 --target bench_train >"$BUILD/bench_build.log" 2>&1; then
  tail -30 "$BUILD/bench_build.log" >&2
  echo "building bench_train failed (full log: $BUILD/bench_build.log)" >&2
  exit 1
fi
KILN_BIN=$BUILD/bench/bench_train

# --- runs -------------------------------------------------------------------------------
# Percent of the CPUs busy over one second (other processes: this is a shared machine).
busy_percent() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  local ta=0 tb=0 i
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=$((tb - ta))
  [ "$total" -gt 0 ] && echo $(( 100 * (total - idle) / total )) || echo 0
}
wait_quiet() {
  local waited=0 busy
  busy=$(busy_percent)
  while [ "$busy" -gt 25 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2
    waited=$((waited + 3))
    busy=$(busy_percent)
  done
  echo "$busy"
}

RESULTS=$BUILD/train_bench.jsonl
: >"$RESULTS"
# "busy total" jiffies of all CPUs, from /proc/stat's first line.
cpu_jiffies() {
  local a i busy=0 total=0
  read -r -a a < <(head -1 /proc/stat)
  for i in 1 2 3 4 5 6 7 8; do total=$((total + a[i])); done
  busy=$((total - a[4] - a[5]))
  echo "$busy $total"
}
run_one() { # model variant command...
  local model=$1 variant=$2
  shift 2
  local busy out before after
  busy=$(wait_quiet)
  before=$(cpu_jiffies)
  if out=$("$@" 2>"$BUILD/bench_stderr.log") && [ "${out:0:1}" = "{" ]; then
    after=$(cpu_jiffies)
    # other_load: the share of the machine's CPU time that other processes used during
    # the run (the CPUs' busy time minus the run's own CPU time); the table leaves out
    # runs above 15% when it has cleaner repeats.
    "$PY" - "$out" "$busy" "$before" "$after" "$(getconf CLK_TCK)" "$RESULTS" "$REP" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
b0, t0 = map(int, sys.argv[3].split()); b1, t1 = map(int, sys.argv[4].split())
hz = float(sys.argv[5])
total = (t1 - t0) / hz
r["repeat"] = int(sys.argv[7])
r["busy_before_pct"] = int(sys.argv[2])
# Under 2 CPU-seconds the 10 ms accounting ticks make the figure meaningless: -1, unknown.
r["other_load"] = round(max(0.0, ((b1 - b0) / hz - r.get("cpu_s", 0.0)) / total), 3) \
    if total >= 2.0 else -1
with open(sys.argv[6], "a") as f:
    f.write(json.dumps(r) + "\n")
print("  %-14s %-13s %8.4f s/epoch  peak %6.0f MB  (other load during run: %s)" % (
    r["model"], r["variant"] if r["side"] == "kiln" else "torch-" + r["variant"],
    r["median_epoch_s"], r["peak_rss_mb"],
    "%3.0f%%" % (100 * r["other_load"]) if r["other_load"] >= 0 else "run too short to tell"),
    file=sys.stderr)
PYEOF
  else
    local msg
    msg=$(tail -3 "$BUILD/bench_stderr.log" | tr '\n"\\' '   ')
    echo "{\"model\": \"$model\", \"variant\": \"$variant\", \"error\": \"$msg\"}" >>"$RESULTS"
    echo "  $model $variant FAILED: $msg" >&2
  fi
}

EP=()
[ -n "$EPOCHS" ] && EP=(--epochs "$EPOCHS")
for REP in $(seq 1 "$REPEATS"); do
  echo "repeat $REP/$REPEATS" >&2
  for m in $MODELS; do
    run_one "$m" kiln "$KILN_BIN" --model "$m" "${EP[@]}"
    run_one "$m" dense "$PY" -W ignore bench/bench_train_torch.py --model "$m" --variant dense "${EP[@]}"
    if [ "$m" = imdb ] || [ "$m" = reuters ]; then
      for v in coo csr embbag; do
        run_one "$m" "$v" "$PY" -W ignore bench/bench_train_torch.py --model "$m" --variant "$v" "${EP[@]}"
      done
    fi
  done
done
rm -f "$BUILD/bench_stderr.log"
echo
"$PY" bench/train_bench_table.py "$RESULTS" $MARKDOWN
echo
echo "raw runs: $RESULTS"

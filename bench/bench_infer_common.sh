# Sourced by run_infer_bench.sh and run_int8_bench.sh: their shared flags, the ONNX
# Runtime (onnxruntime-node) lookup and the Release build of the bench targets.
# The caller sets BENCH_NAME (for messages and log names) and BENCH_HELP_LINES (the
# "sed -n" range of its header that --help prints), then calls the three functions.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${KILN_BENCH_BUILD:-build-bench}
ROUNDS=3
MIN_TIME=0.5
MODELS="imdb reuters housing fashion_mnist"
MARKDOWN=

bench_parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --rounds) ROUNDS=$2; shift 2 ;;
      --min-time) MIN_TIME=$2; shift 2 ;;
      --models) MODELS=$2; shift 2 ;;
      --markdown) MARKDOWN=--markdown; shift ;;
      -h|--help) sed -n "$BENCH_HELP_LINES" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "$BENCH_NAME: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
  done
}

# Sets ORT_DIR (exported as KILN_ORT_NODE_MODULES) and ORT_VERSION, or exits.
bench_find_ort() {
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
}

# bench_build LOGTAG TARGET...: (re)configures BUILD (Release when new; every time, so a
# tree configured before these targets existed learns them) and builds the targets.
bench_build() {
  local tag=$1
  shift
  local cfg=()
  [ -f "$BUILD/CMakeCache.txt" ] || cfg=(-DCMAKE_BUILD_TYPE=Release)
  mkdir -p "$BUILD"
  cmake -S . -B "$BUILD" "${cfg[@]}" >"$BUILD/${tag}_configure.log" 2>&1 ||
    { cat "$BUILD/${tag}_configure.log" >&2; exit 1; }
  cmake --build "$BUILD" -j2 --target "$@" >"$BUILD/${tag}_build.log" 2>&1 ||
    { tail -30 "$BUILD/${tag}_build.log" >&2; exit 1; }
}

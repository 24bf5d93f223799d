#!/usr/bin/env bash
# What the cross-checks need beyond the build (idempotent): the ONNX backend node
# tests, onnx.checker (python3-onnx), clang with libFuzzer, Node.js, and ONNX Runtime
# from npm (onnxruntime-node, installed without its install scripts).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

packages=(libonnx-testdata python3-onnx clang libclang-rt-14-dev)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
arch=$(dpkg --print-architecture)
missing=()
for p in "${packages[@]}"; do
  out=$(dpkg-query -W -f='${Status} ${Architecture}\n' "$p" 2>/dev/null || true)
  grep -Eq "^install ok installed ($arch|all)$" <<<"$out" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-test: installing ${missing[*]}"
  $sudo apt-get update -qq || echo "setup-test: apt-get update reported errors; installing anyway"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

ort="$root/tests/integration/ort"
if [ ! -d "$ort/node_modules/onnxruntime-node" ]; then
  echo "setup-test: npm ci --ignore-scripts in tests/integration/ort"
  (cd "$ort" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

#!/usr/bin/env bash
# Installs what kiln needs to build, test and run its demo on Debian 12 (idempotent:
# installs only what is missing). Run as root or with sudo available.
set -euo pipefail

packages=(cmake gcc make pkg-config libopenblas-dev libcmocka-dev libcjson-dev zlib1g-dev
          protobuf-c-compiler libprotobuf-c-dev libonnx-dev
          dataset-fashion-mnist)

arch=$(dpkg --print-architecture)
# Installed for this machine's architecture (or arch-independent): other
# architectures' copies (multiarch ARM libraries) do not count.
installed() {
  local out
  out=$(dpkg-query -W -f='${Status} ${Architecture}\n' "$1" 2>/dev/null || true)
  grep -Eq "^install ok installed ($arch|all)$" <<<"$out"
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  # A mirror mid-sync can fail one list; the install below still fails loudly if a
  # package cannot be had.
  $sudo apt-get update -qq || echo "setup: apt-get update reported errors; installing anyway"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

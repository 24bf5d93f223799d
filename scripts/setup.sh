#!/usr/bin/env bash
# Installs what kiln needs to build, test and run its demo on Debian 12 (idempotent:
# installs only what is missing). Run as root or with sudo available.
set -euo pipefail

packages=(cmake gcc make pkg-config libopenblas-dev libcmocka-dev libcjson-dev zlib1g-dev
          protobuf-c-compiler libprotobuf-c-dev libonnx-dev
          dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

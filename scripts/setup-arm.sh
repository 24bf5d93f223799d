#!/usr/bin/env bash
# Installs what the ARM cross builds need on Debian 12 (idempotent: adds the arm64 and
# armhf architectures only when absent, installs only the packages that are missing):
# the cross compilers, qemu-user, and the ARM builds of libprotobuf-c and cmocka from
# Debian multiarch, which co-install with the amd64 ones. Run as root or with sudo.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

added=0
foreign="$(dpkg --print-foreign-architectures)" # (not piped into grep -q: pipefail + SIGPIPE)
for arch in arm64 armhf; do
  if ! grep -qx "$arch" <<<"$foreign"; then
    echo "setup-arm: adding dpkg architecture $arch"
    $sudo dpkg --add-architecture "$arch"
    added=1
  fi
done

packages=(cmake make pkg-config protobuf-c-compiler libonnx-dev qemu-user-static
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross
          gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
          libprotobuf-c-dev:arm64 libcmocka-dev:arm64
          libprotobuf-c-dev:armhf libcmocka-dev:armhf)
missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ "$added" -eq 1 ]; then
  # A mirror caught mid-sync can fail one index (seen: bookworm-security armhf); the
  # install below still fails loudly if a package we need cannot be found.
  $sudo apt-get update -qq || echo "setup-arm: warning: apt-get update reported errors; trying the install anyway" >&2
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-arm: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

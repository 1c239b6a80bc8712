#!/usr/bin/env bash
# Installs what dmoe needs to build and test on Debian 12: Meson, Ninja, fmt, CLI11, doctest,
# LLVM's FileCheck and lit. The CUDA toolkit (NVRTC) is expected at $CUDA_HOME, $CUDA_PATH or /usr/local/cuda.
set -euo pipefail
pkgs=(meson ninja-build pkg-config libfmt-dev libcli11-dev doctest-dev llvm-14-tools python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cuda="${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}"
if [ ! -f "$cuda/include/nvrtc.h" ]; then
  echo "setup: no CUDA toolkit at $cuda (nvrtc.h missing); set CUDA_HOME" >&2
  exit 1
fi

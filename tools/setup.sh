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
# SASS checks (tests/lit/inspect-sass-wgmma.test) need cuobjdump + nvdisasm, which the toolkit image may
# lack: NVIDIA publishes both on PyPI. Unpacked under .tools/cuda/bin (ignored by git); best effort.
tools_bin="$(cd "$(dirname "$0")/.." && pwd)/.tools/cuda/bin"
if [ ! -x "$tools_bin/cuobjdump" ] || [ ! -x "$tools_bin/nvdisasm" ]; then
  tmp="$(mktemp -d)"
  if python3 -m pip download -q --no-deps -d "$tmp" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm 2>/dev/null; then
    mkdir -p "$tools_bin"
    for whl in "$tmp"/*.whl; do python3 -m zipfile -e "$whl" "$tmp/x"; done
    cp "$tmp"/x/nvidia/cu*/bin/cuobjdump "$tmp"/x/nvidia/cu*/bin/nvdisasm "$tools_bin/" && chmod +x "$tools_bin"/*
  else
    echo "setup: could not fetch cuobjdump/nvdisasm from PyPI; the SASS test will be skipped" >&2
  fi
  rm -rf "$tmp"
fi

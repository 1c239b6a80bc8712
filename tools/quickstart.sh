#!/usr/bin/env bash
# The main job on a fresh machine: install, build, compile every kernel of a model's layer through the
# JIT and its cache, and measure the JIT (on the GPU when one is present, else compiler-side only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
preset="${1:-mixtral-8x7b}"
./build/tools/dmoe compile --all --preset "$preset"
./build/bench/jit_bench

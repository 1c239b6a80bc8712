#!/usr/bin/env bash
# The main job on a fresh machine: install, build, compile every kernel of a model's layer through the
# JIT and its cache, measure the JIT (on the GPU when one is present, else compiler-side only), and with
# a GPU run the product and routing benchmarks on their smallest problems.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
preset="${1:-mixtral-8x7b}"
./build/tools/dmoe compile --all --preset "$preset"
./build/bench/jit_bench
./build/tools/dmoe run --device cpu --preset tiny   # one layer step on the fp64 reference, gradients checked
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ./build/tools/dmoe bench --products --quick
  ./build/tools/dmoe bench --routing --quick
else
  echo "quickstart: no GPU here; the GPU parts (product and routing benchmarks, GPU tests) need one"
fi

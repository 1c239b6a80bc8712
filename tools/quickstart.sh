#!/usr/bin/env bash
# The main job on a fresh machine: install, build, compile every kernel of a model's layer through the
# JIT and its cache, measure the JIT, and run one checked dMoE layer step with `dmoe run`: on the GPU
# when one is usable (the preset's shape, forward + backward timed, sampled fp64 check), else on the
# fp64 CPU reference layer at the tiny preset (gradients checked by central differences).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
preset="${1:-mixtral-8x7b}"
./build/tools/dmoe compile --all --preset "$preset"
./build/bench/jit_bench
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ./build/tools/dmoe run --device gpu --preset "${DMOE_RUN_PRESET:-mb-356m}"
else
  echo "quickstart: no GPU here: the layer step runs on the fp64 CPU reference (tiny preset)"
  ./build/tools/dmoe run --device cpu --preset tiny
fi

#!/usr/bin/env bash
# One device call that checks and measures everything GPU-side of a carried build (tools/pack-run.sh):
# every test program (tools/gpu-tests.sh), the product benchmark, one tuning run and one checked CPU layer
# step. Logs and results go to LOG_DIR ($OUT on the device machine); a summary is printed last.
# Usage: tools/gpu-session.sh [BUILD_DIR] [LOG_DIR]   (e.g. tools/gpu-session.sh build-run "$OUT")
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-run}"
logs="${2:-${OUT:-/tmp}/dmoe-gpu-session}"
mkdir -p "$logs"
export DMOE_CACHE_DIR="${DMOE_CACHE_DIR:-$(mktemp -d)/cache}"
bash tools/gpu-tests.sh "$build" "$logs" > "$logs/tests.txt" 2>&1
"$build/bench/product_bench" --json > "$logs/products.txt" 2>&1
"$build/tools/dmoe" tune --preset mb-356m --budget "${DMOE_TUNE_BUDGET:-120}" --db "$logs/tuning.json" \
  --plot "$logs/tune-mb-356m.svg" > "$logs/tune.txt" 2>&1
"$build/tools/dmoe" run --device cpu --preset tiny --json > "$logs/run-cpu.txt" 2>&1
tail -1 "$logs/tests.txt"
grep -E "ceilings|::" "$logs/products.txt" | grep -v '^{' | head -80
tail -8 "$logs/tune.txt"
tail -2 "$logs/run-cpu.txt"

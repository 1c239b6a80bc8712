#!/usr/bin/env bash
# One device call that checks and measures everything GPU-side of a carried build (tools/pack-run.sh).
# Steps (DMOE_SESSION_STEPS, default "tests layer tune"), each under its own time limit:
#   tests     every test program (tools/gpu-tests.sh; DMOE_TEST_FILTER selects programs)
#   layer     dmoe bench --layer --check --json: every preset, forward + backward, checked
#   tune      dmoe tune --preset mb-356m with a plot
#   products  the product benchmark with the tuned tiles (dmoe bench --products --tuned)
# Logs and results go to LOG_DIR ($OUT on the device machine, which brings back at most 8 files); a
# summary is printed last.
# Usage: tools/gpu-session.sh [BUILD_DIR] [LOG_DIR]   (e.g. tools/gpu-session.sh build-run "$OUT")
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-run}"
logs="${2:-${OUT:-/tmp}/dmoe-gpu-session}"
mkdir -p "$logs"
export DMOE_CACHE_DIR="${DMOE_CACHE_DIR:-$(mktemp -d)/cache}"
steps="${DMOE_SESSION_STEPS:-tests layer tune}"
for step in $steps; do
  case $step in
    tests) timeout "${DMOE_TESTS_LIMIT:-300}" bash tools/gpu-tests.sh "$build" "$logs" > "$logs/tests.txt" 2>&1 ;;
    layer) timeout "${DMOE_LAYER_LIMIT:-200}" "$build/tools/dmoe" bench --layer --check --json \
             > "$logs/layer.txt" 2>&1 ;;
    tune) timeout "${DMOE_TUNE_LIMIT:-240}" "$build/tools/dmoe" tune --preset mb-356m \
            --budget "${DMOE_TUNE_BUDGET:-200}" --plot "$logs/tune-mb-356m.svg" > "$logs/tune.txt" 2>&1
          cp "$DMOE_CACHE_DIR/tuning.json" "$logs/tuning.json" ;;  # the database the runtime consults
    products) timeout "${DMOE_PRODUCTS_LIMIT:-200}" "$build/bench/product_bench" --json --tuned \
                > "$logs/products.txt" 2>&1 ;;
    *) echo "gpu-session: unknown step '$step'"; exit 2 ;;
  esac
  echo "== $step: exit $?"
done
[ -f "$logs/tests.txt" ] && grep -E "^(PASS|FAIL|SKIP)|passed," "$logs/tests.txt"
[ -f "$logs/layer.txt" ] && grep -v '^{' "$logs/layer.txt" | tail -40
[ -f "$logs/tune.txt" ] && tail -12 "$logs/tune.txt"
[ -f "$logs/products.txt" ] && grep -v '^{' "$logs/products.txt" | tail -40
exit 0

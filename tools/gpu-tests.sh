#!/usr/bin/env bash
# Runs a carried build's doctest programs and the JIT benchmark on a GPU machine that has the NVIDIA
# driver and CUDA toolkit but no Meson build tree of its own (paths differ from the build machine).
# Usage: tools/gpu-tests.sh [BUILD_DIR] [LOG_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
logs="${2:-${OUT:-/tmp}/dmoe-gpu-logs}"
mkdir -p "$logs"
export DMOE_EXE="$PWD/$build/tools/dmoe"
export DMOE_TEST_TMP="$(mktemp -d)"
export DMOE_CACHE_DIR="$DMOE_TEST_TMP/cache"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader || true
passed=0; failed=0; skipped=0
for t in "$build"/tests/*_test; do
  name=$(basename "$t")
  timeout "${DMOE_TEST_TIMEOUT:-400}" "$t" --duration=true > "$logs/$name.log" 2>&1
  rc=$?
  case $rc in
    0) passed=$((passed + 1)); echo "PASS $name: $(grep -E '^\[doctest\] test cases' "$logs/$name.log")";;
    77) skipped=$((skipped + 1)); echo "SKIP $name: $(head -1 "$logs/$name.log")";;
    124) failed=$((failed + 1)); echo "FAIL $name: timed out after ${DMOE_TEST_TIMEOUT:-400} s"; tail -5 "$logs/$name.log";;
    *) failed=$((failed + 1)); echo "FAIL $name (exit $rc)"; tail -40 "$logs/$name.log";;
  esac
done
"$build"/bench/jit_bench --json 2>&1 | tee "$logs/jit_bench.txt"
# One combined log: the device tool brings back only a few files.
for f in "$logs"/*.log; do echo "===== $(basename "$f")"; cat "$f"; done > "$logs/all-tests.txt"
rm -f "$logs"/*.log
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]

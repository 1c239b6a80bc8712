#!/usr/bin/env bash
# Runs a carried build's doctest programs and the JIT benchmark on a GPU machine that has the NVIDIA
# driver and CUDA toolkit but no Meson build tree of its own (paths differ from the build machine).
# Usage: tools/gpu-tests.sh [BUILD_DIR] [LOG_DIR]   (DMOE_TEST_FILTER: a regex of program names to run;
# DMOE_TEST_TIMEOUT: seconds per program)
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
logs="${2:-${OUT:-/tmp}/dmoe-gpu-logs}"
mkdir -p "$logs"
# Per-program logs go to a scratch folder and are appended to one combined log as each program ends, so
# a run cut short still brings its logs back (the device tool returns only a few files).
work="$(mktemp -d)"
: > "$logs/all-tests.txt"
export DMOE_EXE="$PWD/$build/tools/dmoe"
export DMOE_TEST_TMP="$(mktemp -d)"
export DMOE_CACHE_DIR="$DMOE_TEST_TMP/cache"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader || true
passed=0; failed=0; skipped=0
for t in "$build"/tests/*_test; do
  name=$(basename "$t")
  [[ -n "${DMOE_TEST_FILTER:-}" && ! "$name" =~ $DMOE_TEST_FILTER ]] && continue  # e.g. 'sm90|layer'
  timeout "${DMOE_TEST_TIMEOUT:-400}" "$t" --duration=true > "$work/$name.log" 2>&1
  rc=$?
  { echo "===== $name (exit $rc)"; cat "$work/$name.log"; } >> "$logs/all-tests.txt"
  case $rc in
    0) passed=$((passed + 1)); echo "PASS $name: $(grep -E '^\[doctest\] test cases' "$work/$name.log")";;
    77) skipped=$((skipped + 1)); echo "SKIP $name: $(head -1 "$work/$name.log")";;
    124) failed=$((failed + 1)); echo "FAIL $name: timed out after ${DMOE_TEST_TIMEOUT:-400} s"; tail -5 "$work/$name.log";;
    *) failed=$((failed + 1)); echo "FAIL $name (exit $rc)"; tail -40 "$work/$name.log";;
  esac
done
[ -z "${DMOE_TEST_FILTER:-}" ] && "$build"/bench/jit_bench --json 2>&1 | tee "$logs/jit_bench.txt"
rm -rf "$work"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]

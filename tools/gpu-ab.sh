#!/usr/bin/env bash
# One device call that measures a change against its base: two carried builds (tools/pack-run.sh, e.g.
# DMOE_PACK_TESTS='sm90|layer_test' for each; ~22 MB apiece, both fit the 64 MiB carry), each with its
# own kernel cache, benchmarks first (base, then change, so neither runs on a GPU warmed by the other's
# tests), then the change's tests. Every step has its own time limit; logs go to LOG_DIR ($OUT): at most
# five files (products-base, products-change, layer-base, layer-change, tests.txt holding every test's
# log), since the device tool returns only 8 files from $OUT and a command may add its own.
# Usage: tools/gpu-ab.sh BASE_DIR CHANGE_DIR [LOG_DIR]
#   DMOE_AB_PRODUCTS  product_bench filters, ';'-separated (each one a run; empty: none)
#   DMOE_AB_PRESETS   dmoe bench --layer --check presets, comma-separated (empty: none)
#   DMOE_AB_TESTS     the change's tests: "program[:doctest -tc filter]" entries, ';'-separated
#   DMOE_AB_LIMIT     seconds per step (default 120)
set -uo pipefail
cd "$(dirname "$0")/.."
base="${1:?base build dir}" change="${2:?change build dir}" logs="${3:-${OUT:-/tmp}/dmoe-ab}"
limit="${DMOE_AB_LIMIT:-120}"
mkdir -p "$logs"
scratch="$(mktemp -d)"  # what need not come back
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader || true
for side in base change; do
  dir=$base; [ $side = change ] && dir=$change
  export DMOE_CACHE_DIR="$(mktemp -d)/cache"
  IFS=';' read -ra filters <<< "${DMOE_AB_PRODUCTS:-}"
  for f in "${filters[@]}"; do
    [ -z "$f" ] && continue
    timeout "$limit" "$dir/bench/product_bench" --json --filter "$f" >> "$logs/products-$side.txt" 2>&1
    echo "== $side products '$f': exit $?"
  done
  if [ -n "${DMOE_AB_PRESETS:-}" ]; then
    timeout "$limit" "$dir/tools/dmoe" bench --layer --check --json --presets "$DMOE_AB_PRESETS" \
      > "$logs/layer-$side.txt" 2>&1
    echo "== $side layer: exit $?"
  fi
done
export DMOE_CACHE_DIR="$(mktemp -d)/cache" DMOE_EXE="$PWD/$change/tools/dmoe"
IFS=';' read -ra tests <<< "${DMOE_AB_TESTS:-}"
for t in "${tests[@]}"; do
  [ -z "$t" ] && continue
  prog="${t%%:*}" tc="" args=()
  [[ "$t" == *:* ]] && tc="${t#*:}" && args=("-tc=$tc")  # a filter may hold spaces: one argument
  timeout "$limit" "$change/tests/$prog" "${args[@]}" --duration=true > "$scratch/test.txt" 2>&1
  rc=$?
  { echo "===== $prog${tc:+ ($tc)} (exit $rc)"; cat "$scratch/test.txt"; } >> "$logs/tests.txt"
  echo "== test $prog${tc:+ ($tc)}: exit $rc $(grep -E '^\[doctest\] test cases|checks,' "$scratch/test.txt" | tail -1)"
  [ $rc -ne 0 ] && grep -E 'ERROR|values:' "$scratch/test.txt" | head -20
done
# Side by side: each product's time (ms) and SOL, base | change.
for side in base change; do
  [ -f "$logs/products-$side.txt" ] || continue
  grep -E '^  [01D]' "$logs/products-$side.txt" | awk '{print $1, $2, $4}' > "$scratch/p-$side"
done
[ -f "$scratch/p-base" ] && [ -f "$scratch/p-change" ] && paste -d' ' "$scratch/p-base" "$scratch/p-change" |
  awk '{printf "%-28s %8s %5s | %8s %5s  %+.1f%%\n", $1, $2, $3, $5, $6, ($5 / $2 - 1) * 100}'
for side in base change; do
  [ -f "$logs/layer-$side.txt" ] && { echo "-- layer $side"; grep -E '^dmoe run|forward|step|phases|check' "$logs/layer-$side.txt"; }
done
exit 0

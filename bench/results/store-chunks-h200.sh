#!/usr/bin/env bash
# Session 11, device call 2: chunked output staging (TileConfig::store_chunks) — GPU test, then A/B on the large shapes.
# Expects build-packs/<name>.tar.xz from tools/pack-run.sh for v23 (the store_chunks build), carried to the device; writes to $OUT.
set -uo pipefail
t0=$(date +%s); left() { echo $(( 560 - ($(date +%s) - t0) )); }
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/v23.tar.xz && B=/tmp/b/v23
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
export DMOE_CACHE_DIR=$(mktemp -d)/c
timeout 200 $B/tests/runtime_sm90_products_test -tc='*chunked*' --duration=true > $OUT/tests.txt 2>&1
echo "== tests exit $? $(grep -E '^\[doctest\] (test cases|assertions)' $OUT/tests.txt | tr '\n' ' ')  t=$(( $(date +%s) - t0 ))"
run() {  # label, filter, store-chunks (-1: default)
  local a=(); [ "$3" -ge 0 ] && a=(--store-chunks "$3")
  [ "$(left)" -lt 60 ] && { echo "== skip $1 (time)"; return; }
  echo "##### $1 sc=$3 '$2'" >> $OUT/products.txt
  timeout $(( $(left) - 20 )) $B/bench/product_bench --json --filter "$2" "${a[@]}" >> $OUT/products.txt 2>&1
  echo "== $1 sc=$3 exit $? t=$(( $(date +%s) - t0 ))"
}
for rep in 1 2; do
  for sc in -1 2; do run "mixtral-r$rep" 'H=4096 F=14336 E=8 K=2 uniform' $sc; done
  for sc in -1 2; do run "h4096-r$rep" 'H=4096 F=16384' $sc; done
done
for sc in -1 2 1; do run "h512" 'T=65536 H=512' $sc; done
for sc in -1 2; do run "deepseek" 'H=7168 F=2048 E=256 K=8 uniform' $sc; done
grep -E '^#####|^  [01D]' $OUT/products.txt | awk '{print $1, $2, $3}' | head -150

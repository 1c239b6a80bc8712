#!/usr/bin/env bash
# Session 11, device call 3: DDS tiles wider than a block (v24) — GPU tests, then A/B against v23 (= d14b79b).
# Expects build-packs/<name>.tar.xz from tools/pack-run.sh for v23 and v24 (d14b79b and its v24 change), carried to the device; writes to $OUT.
set -uo pipefail
t0=$(date +%s); left() { echo $(( 570 - ($(date +%s) - t0) )); }
for b in v23 v24; do mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/$b.tar.xz; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
export DMOE_CACHE_DIR=$(mktemp -d)/c
for tc in '*wider than a block*' '*every op in every operand layout*' '*tile shapes and pipeline depths*'; do
  echo "##### v24 runtime_sm90_products_test -tc='$tc'" >> $OUT/tests.txt
  timeout 150 /tmp/b/v24/tests/runtime_sm90_products_test -tc="$tc" --duration=true >> $OUT/tests.txt 2>&1
  echo "== tests '$tc' exit $? t=$(( $(date +%s) - t0 ))"
done
grep -E '^#####|^\[doctest\] (test cases|assertions)' $OUT/tests.txt
run() {  # build, filter
  [ "$(left)" -lt 40 ] && { echo "== skip $1 '$2' (time)"; return; }
  echo "##### $1 '$2'" >> $OUT/products.txt
  DMOE_CACHE_DIR=/tmp/cache-$1 timeout $(( $(left) - 15 )) /tmp/b/$1/bench/product_bench --json --filter "$2" >> $OUT/products.txt 2>&1
  echo "== $1 '$2' exit $? t=$(( $(date +%s) - t0 ))"
}
for f in 'H=4096 F=16384' 'T=65536 H=512' 'T=32768 H=768' 'T=8192 H=1024' 'H=4096 F=16384'; do run v23 "$f"; run v24 "$f"; done
grep -E '^#####|^  DDS' $OUT/products.txt

#!/usr/bin/env bash
# Session 16, device call 7: main f3cccf5 (build-packs/s16f.tar.xz; bench/paired.hpp's ratio): the full
# product table with the paired column (products-h200-v10.txt), then dmoe tune --preset mb-356m with the
# confirmation (issue 6's 5-minute run).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16f.tar.xz
DMOE_CACHE_DIR=/tmp/cache-products timeout 280 /tmp/b/s16f/bench/product_bench --json > "$OUT/products-h200-v10.txt" 2>&1
echo "== product_bench exit $? t=$(( $(date +%s) - t0 ))"
DMOE_CACHE_DIR=/tmp/cache-tune timeout 70 /tmp/b/s16f/tools/dmoe tune --preset mb-356m --budget 45 > "$OUT/tune-mb-356m.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -A4 "^product " "$OUT/tune-mb-356m.txt"

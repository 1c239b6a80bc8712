#!/usr/bin/env bash
# Session 16, device call 4: the full product table at main ef68c50 (build-packs/s16m.tar.xz; the product
# kernels are the v7 table's, c6776a8), with nvidia-smi sampling the SM clock and power every 100 ms: the
# same kernels measured again show the table's run-to-run spread at the power cap (call 3).
set -uo pipefail
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16m.tar.xz
export DMOE_CACHE_DIR=/tmp/cache-products
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 100 > "$OUT/products-v8-smi.csv" &
smi=$!
timeout 430 /tmp/b/s16m/bench/product_bench --json > "$OUT/products-h200-v8.txt" 2>&1
echo "== product_bench exit $? t=$(( $(date +%s) - t0 ))"
kill $smi

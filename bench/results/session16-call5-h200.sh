#!/usr/bin/env bash
# Session 16, device call 5: the full product table with the paired timing (main, build-packs/s16p.tar.xz:
# product_bench's compute-bound rows also time dmoe and cuBLAS's fastest dense algorithm in alternating
# batches), nvidia-smi sampling every 100 ms. The product kernels are v7's and v8's.
set -uo pipefail
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16p.tar.xz
export DMOE_CACHE_DIR=/tmp/cache-products
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 100 > "$OUT/products-v9-smi.csv" &
smi=$!
timeout 560 /tmp/b/s16p/bench/product_bench --json > "$OUT/products-h200-v9.txt" 2>&1
echo "== product_bench exit $? t=$(( $(date +%s) - t0 ))"
kill $smi
grep -v '^{' "$OUT/products-h200-v9.txt" | tail -4

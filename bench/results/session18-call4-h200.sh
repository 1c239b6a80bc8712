#!/usr/bin/env bash
# Session 18, device call 4. Build s18c = main 8185917 (product v36: the activation warps, forward,
# gradient and gated; the default of the cooperative activation SDDs, forward from H 2048).
# 1. Every GPU test program (sharded by test case).
# 2. The product table (v11), every problem, with the paired ratios.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18c.tar.xz
B=/tmp/b/s18c
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=170 timeout 210 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
gzip -f "$OUT/tests/all-tests.txt"
DMOE_CACHE_DIR=/tmp/cache-products timeout 300 $B/bench/product_bench --json > "$OUT/products-h200-v11.txt" 2>&1
echo "== product_bench exit $? t=$(( $(date +%s) - t0 ))"
python3 tools/product-gaps.py "$OUT/products-h200-v11.txt" | tail -3

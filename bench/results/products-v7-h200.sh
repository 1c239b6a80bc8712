#!/usr/bin/env bash
# Session 13, device call 3: the full product table at main's kernels (build-packs/main.tar.xz, kernels as
# c6776a8..c5d055f) for issue 4, then where DeepSeek-V3's DSD TN (weight gradient) spends its time (ncu).
set -uo pipefail
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/main.tar.xz
export DMOE_CACHE_DIR=/tmp/cache-products
timeout 430 /tmp/b/main/bench/product_bench --json > "$OUT/products-h200-v7.txt" 2>&1
echo "== product_bench exit $? t=$(( $(date +%s) - t0 ))"
left=$(( 585 - ($(date +%s) - t0) ))
[ "$left" -gt 60 ] && timeout "$left" tools/ncu-source.sh 'dsd_tn.*h7168' "$OUT/ncu-dsd-tn-deepseek" \
  /tmp/b/main/bench/product_bench --filter 'H=7168 F=2048 E=256 K=8 uniform' --reps 2
echo "== end t=$(( $(date +%s) - t0 ))"

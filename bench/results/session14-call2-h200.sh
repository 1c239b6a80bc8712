#!/usr/bin/env bash
# Session 14 call 2: merge/router-grad (main + routing v7c for K <= 2, + product_bench --router-gemms;
# build-packs/s14a.tar.xz at 91275e8): every GPU test program (sharded), then the layer's router GEMMs
# (cuBLASLt's first 8 heuristic algorithms at the presets' shapes).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14a.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=300 timeout 320 tools/gpu-tests.sh /tmp/b/s14a "$OUT/tests" | tail -40
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
export DMOE_CACHE_DIR=/tmp/cache-rg
timeout 150 /tmp/b/s14a/bench/product_bench --router-gemms --json > "$OUT/router-gemms.txt" 2>&1
echo "== router gemms exit $? t=$(( $(date +%s) - t0 ))"
grep -v '^{' "$OUT/router-gemms.txt"

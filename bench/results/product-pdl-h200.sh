#!/usr/bin/env bash
# Session 14 call 6: product v29 (next/product-pdl, wgmma products as programmatic dependent launches;
# build-packs/s14d.tar.xz) against main 557487e (s14m.tar.xz): every GPU test program of s14d (sharded),
# then products at H 512 and three layer presets, two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14d.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=140 timeout 150 tools/gpu-tests.sh /tmp/b/s14d "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=60 DMOE_AB_PRODUCTS='T=65536 H=512' \
DMOE_AB_PRESETS=mb-46m,mb-356m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout 380 tools/gpu-ab.sh build-packs/s14m.tar.xz build-packs/s14d.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

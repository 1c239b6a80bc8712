#!/usr/bin/env bash
# Session 13, device call 7: router grad v7c (next/router-grad-thread at 9e9d3ae: the thread form on its
# row in shared memory, coalesced in and out; build-packs/rg2.tar.xz) against main at abb6bea
# (main3.tar.xz): rg2's routing, layer and C ABI tests (sharded), routing kernels and two layer presets in
# two alternating rounds, then the layer table of every preset (fp64-checked, 16 sampled tokens) per build.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/rg2.tar.xz && tar -C /tmp/b -xJf build-packs/main3.tar.xz
DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=90 DMOE_TEST_FILTER='router|layer_test|routing_chain|c_api' \
  timeout 100 tools/gpu-tests.sh /tmp/b/rg2 "$OUT/rg2-tests"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=60 \
DMOE_AB_ROUTING='T=64K E=64 K=1;T=16K E=64 K=8;fine-grained' \
DMOE_AB_PRESETS=mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout 100 tools/gpu-ab.sh build-packs/main3.tar.xz build-packs/rg2.tar.xz | grep -v '^{' | sed -n '/^-- routing/,$p' | grep -v "^  \|^dmoe run\|^preset"
echo "== ab t=$(( $(date +%s) - t0 ))"
for b in main3 rg2; do
  left=$(( 275 - ($(date +%s) - t0) ))
  [ "$left" -lt 20 ] && { echo "== skip layer $b"; continue; }
  DMOE_CACHE_DIR=/tmp/cache-layer-$b timeout "$left" /tmp/b/$b/tools/dmoe bench --layer --check --json \
    --presets mb-46m,mb-356m,mixtral-8x7b,fine-grained,deepseek-v3 > "$OUT/layer-$b.txt" 2>&1
  echo "== layer $b exit $? t=$(( $(date +%s) - t0 ))"
  grep -v '^{' "$OUT/layer-$b.txt" | tail -6
done

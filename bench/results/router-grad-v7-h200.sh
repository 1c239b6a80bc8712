#!/usr/bin/env bash
# Session 13, device call 6: routing v7 (RouterGrad one thread per token, b6bb7f4, build-packs/rg.tar.xz)
# through every GPU test program (sharded), then against main before it (m6w.tar.xz: 43ec7bf's content)
# on the routing kernels and two layer presets, two alternating rounds; then the layer table of every
# preset (checked against fp64) at rg for the README.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/rg.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=200 timeout 240 tools/gpu-tests.sh /tmp/b/rg "$OUT/rg-tests"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=100 \
DMOE_AB_ROUTING='T=64K E=64 K=1;T=16K E=64 K=8;fine-grained' \
DMOE_AB_PRESETS=mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout 200 tools/gpu-ab.sh build-packs/m6w.tar.xz build-packs/rg.tar.xz | grep -v '^{' | sed -n '/^-- routing/,$p' | grep -v "^  \|^dmoe run\|^preset"
echo "== ab t=$(( $(date +%s) - t0 ))"
left=$(( 585 - ($(date +%s) - t0) ))
DMOE_CACHE_DIR=/tmp/cache-layer timeout "$left" /tmp/b/rg/tools/dmoe bench --layer --check --json \
  --presets mb-46m,mb-356m,mixtral-8x7b,fine-grained,deepseek-v3 > "$OUT/layer-h200-session13.txt" 2>&1
echo "== layer exit $? t=$(( $(date +%s) - t0 ))"
grep -v '^{' "$OUT/layer-h200-session13.txt" | tail -8

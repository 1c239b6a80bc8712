#!/usr/bin/env bash
# Session 14 call 8: product v30b (next/tn-skip-padding, the count loaded beside the offsets;
# build-packs/s14f.tar.xz) against main's kernels (s14m.tar.xz): the padding-skip GPU test, then the
# DSD TN products and the mb-356m layer (25 % padding), two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14f.tar.xz
DMOE_CACHE_DIR=/tmp/cache-t timeout 90 /tmp/b/s14f/tests/runtime_sm90_products_test -tc="*padding*" > "$OUT/padding-test.txt" 2>&1
echo "== test exit $? t=$(( $(date +%s) - t0 ))"; tail -3 "$OUT/padding-test.txt"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=70 DMOE_AB_PRODUCTS='DSD::TN' DMOE_AB_PRESETS=mb-356m DMOE_AB_LOGS="$OUT/ab" \
  timeout 280 tools/gpu-ab.sh build-packs/s14m.tar.xz build-packs/s14f.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

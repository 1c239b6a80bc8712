#!/usr/bin/env bash
# Session 16, device call 1: product v32 (half tiles; branch next/half-tile). Builds made here with
# tools/pack-run.sh: s16m = main ef68c50, s16a = v32 (cooperative half tiles, 3ad1be0), s16b = v32b (also
# ping-pong half tiles). First every GPU test program of s16b (sharded), then the layer A/B of the three
# at the presets with padding (mb-356m 22.7 %, mb-46m 6.2 %, fine-grained 8.3 %), two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16b.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh /tmp/b/s16b "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=60 DMOE_AB_PRODUCTS='' \
DMOE_AB_PRESETS=mb-356m,mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout $(( 590 - ($(date +%s) - t0) )) tools/gpu-ab.sh build-packs/s16m.tar.xz build-packs/s16a.tar.xz \
  build-packs/s16b.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

#!/usr/bin/env bash
# Session 15, device call 1: main b575b33 merged with product v31 (next/row-skip-m; build-packs/s15r.tar.xz,
# a release build made here) — every GPU test program of it (sharded), then the A/B against main b575b33
# (build-packs/s15m.tar.xz): the Zipf product rows and three layer presets, two alternating rounds. The
# layer runs also show the new padding line (16a57bb) for the first time on a GPU.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15r.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh /tmp/b/s15r "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=70 DMOE_AB_PRODUCTS='zipf' \
DMOE_AB_PRESETS=mb-356m,mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout $(( 585 - ($(date +%s) - t0) )) tools/gpu-ab.sh build-packs/s15m.tar.xz build-packs/s15r.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

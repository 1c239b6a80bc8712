#!/usr/bin/env bash
# Session 15, device call 3 (release builds made here): s15n = main 0392b82 (the old jitter hash),
# s15j = main 5282e3b (the 32-bit jitter hash), s15v = next/row-skip-m (main 5282e3b + product v31b).
# 1. every GPU test program of s15v (sharded); 2. routing_bench's jitter (and the rest) at two sizes,
# old hash against new; 3. v31b against main: the Zipf product rows and three layer presets, 2 rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15v.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh /tmp/b/s15v "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUTING='T=64K E=64 K=1;T=256K E=8 K=8' DMOE_AB_LOGS="$OUT/jitter" \
  timeout 100 tools/gpu-ab.sh build-packs/s15n.tar.xz build-packs/s15j.tar.xz | grep -v '^{'
grep -h -E "jitter|^#####" "$OUT/jitter/routing.txt"
echo "== jitter t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=70 DMOE_AB_PRODUCTS='zipf' \
DMOE_AB_PRESETS=mb-356m,mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout $(( 590 - ($(date +%s) - t0) )) tools/gpu-ab.sh build-packs/s15j.tar.xz build-packs/s15v.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

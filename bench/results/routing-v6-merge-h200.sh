#!/usr/bin/env bash
# Session 13, device call 4: merge/routing-v6 (main + v6a-d + the layer test fix, build-packs/m6.tar.xz)
# through every GPU test program (sharded, tools/gpu-tests.sh), then against main (main2.tar.xz: main at
# f58765a, the same layer_bench) with the routing kernels and the layer presets, three alternating rounds;
# the third arm is m6 with the programmatic launches off.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/m6.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=200 timeout 260 tools/gpu-tests.sh /tmp/b/m6 "$OUT/m6-tests"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=3 DMOE_AB_LIMIT=150 \
DMOE_AB_ROUTING='T=64K E=64 K=1;T=16K E=256 K=8' \
DMOE_AB_PRESETS=mb-46m,mb-356m,fine-grained,deepseek-v3 DMOE_AB_LOGS="$OUT/ab" \
  timeout $(( 590 - ($(date +%s) - t0) )) \
  tools/gpu-ab.sh build-packs/main2.tar.xz build-packs/m6.tar.xz build-packs/m6.tar.xz@DMOE_PDL=0 | grep -v '^{'
echo "== end t=$(( $(date +%s) - t0 ))"

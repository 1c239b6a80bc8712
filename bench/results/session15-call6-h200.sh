#!/usr/bin/env bash
# Session 15, device call 6: ScatterGrad assignment-parallel (main, build-packs/s15g.tar.xz) against
# the row-parallel form (s15k = main da58fbf): its GPU tests (permute, routing chain, layer, C ABI), then
# routing_bench at three sizes and the layer at fine-grained (K 6) and mb-46m (K 1), one round each.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15g.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=120 DMOE_TEST_FILTER='permute_test|routing_chain|layer_test|c_api' \
  timeout 130 tools/gpu-tests.sh /tmp/b/s15g "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUTING='T=64K E=64 K=8;T=256K E=8 K=8;T=64K E=64 K=1' DMOE_AB_PRESETS=fine-grained,mb-46m \
DMOE_AB_LOGS="$OUT/ab" timeout $(( 285 - ($(date +%s) - t0) )) \
  tools/gpu-ab.sh build-packs/s15k.tar.xz build-packs/s15g.tar.xz | grep -v '^{'
grep -h -E " scatter_grad |^#####" "$OUT/ab/routing.txt"
echo "== ab t=$(( $(date +%s) - t0 ))"

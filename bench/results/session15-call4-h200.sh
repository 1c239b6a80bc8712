#!/usr/bin/env bash
# Session 15, device call 4: the Jitter kernel with 4 vectors per thread (main, build-packs/s15k.tar.xz)
# against one per thread (s15n = main 0392b82): its GPU tests (router, layer, routing chain, C ABI), then
# routing_bench at two sizes, two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15k.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 DMOE_TEST_FILTER='router_test|layer_test|routing_chain|c_api' \
  timeout 170 tools/gpu-tests.sh /tmp/b/s15k "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_ROUTING='T=64K E=64 K=1;T=256K E=8 K=8' DMOE_AB_LOGS="$OUT/jitter" \
  timeout 200 tools/gpu-ab.sh build-packs/s15n.tar.xz build-packs/s15k.tar.xz | grep -v '^{'
grep -h -E " jitter |^#####" "$OUT/jitter/routing.txt"
echo "== jitter t=$(( $(date +%s) - t0 ))"

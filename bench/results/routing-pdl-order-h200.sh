#!/usr/bin/env bash
# Session 13, device call 5: where the routing kernels let the next one launch. m6 = merge/routing-v6
# (trigger, then wait: the whole chain launches at once), m6w = exp/pdl-wait-first (wait, then trigger: one
# kernel ahead), both against m6 with the programmatic launches off (plain launches); routing chain and
# layer, three alternating rounds; m6w's routing, layer and C ABI tests.
set -uo pipefail
DMOE_AB_ROUNDS=3 DMOE_AB_LIMIT=100 DMOE_AB_TEST_LIMIT=200 \
DMOE_AB_ROUTING='T=64K E=64 K=1;T=256K E=64 K=1;T=16K E=256 K=8' \
DMOE_AB_PRESETS=mb-46m,mb-356m,fine-grained DMOE_AB_LOGS="$OUT" \
DMOE_AB_TESTS='runtime_routing_chain_test;runtime_router_test;runtime_permute_test;runtime_layer_test;runtime_c_api_test;runtime_kernel_cache_test' \
  timeout 585 tools/gpu-ab.sh build-packs/m6.tar.xz@DMOE_PDL=0 build-packs/m6w.tar.xz build-packs/m6.tar.xz | grep -v '^{'

#!/usr/bin/env bash
# Prepared in session 13 for the next device call (not yet run): router grad v7c as fixed after call 7
# (next/router-grad-thread at 331486a: g - dot formed as the warp form does, 32 tokens per CTA,
# build-packs/rg3.tar.xz) against main 57e6c61 (main4.tar.xz; abb6bea's kernels, routing_bench with the
# mb-46m preset): rg3's routing, layer and C ABI tests (sharded), then routing kernels and three layer
# presets in two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/rg3.tar.xz
DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=120 DMOE_TEST_FILTER='router|layer_test|routing_chain|c_api' \
  timeout 130 tools/gpu-tests.sh /tmp/b/rg3 "$OUT/rg3-tests"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=60 \
DMOE_AB_ROUTING='mb-46m;T=64K E=64 K=1;T=16K E=64 K=8;T=16K E=8 K=2;fine-grained' \
DMOE_AB_PRESETS=mb-46m,mb-356m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout 200 tools/gpu-ab.sh build-packs/main4.tar.xz build-packs/rg3.tar.xz | grep -v '^{' | sed -n '/^-- routing/,$p' | grep -v "^  \|^dmoe run\|^preset"
echo "== ab t=$(( $(date +%s) - t0 ))"

#!/usr/bin/env bash
# Prepared in session 14 for the next device call (not yet run): product v31 (next/row-skip 3feb1cb,
# build-packs/s14g.tar.xz; rebuild if missing: a worktree at next/row-skip, meson setup build
# --buildtype=release, ninja, tools/pack-run.sh build build-packs/s14g.tar.xz) against main's kernels
# (s14m.tar.xz = 557487e; any later main builds the same kernels): v31's GPU tests (the products' row
# skip, the topology kernel's row counts, the routing chain, the layer, the C ABI), then the Zipf product
# rows (DeepSeek-V3 Zipf included) and three layer presets (padding 25 / 6 / 8 %; DeepSeek-V3 12.5 %: a call of its own), two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14g.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=140 \
DMOE_TEST_FILTER='sm90_products|runtime_products|permute_test|routing_chain|layer_test|c_api|glu' \
  timeout 150 tools/gpu-tests.sh /tmp/b/s14g "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=70 DMOE_AB_PRODUCTS='zipf' \
DMOE_AB_PRESETS=mb-356m,mb-46m,fine-grained DMOE_AB_LOGS="$OUT/ab" \
  timeout 420 tools/gpu-ab.sh build-packs/s14m.tar.xz build-packs/s14g.tar.xz | grep -v '^{'
echo "== ab t=$(( $(date +%s) - t0 ))"

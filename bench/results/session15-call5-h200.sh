#!/usr/bin/env bash
# Session 15, device call 5: main da58fbf (build-packs/s15k.tar.xz): every GPU test program (sharded),
# then the whole routing benchmark (issue 3's table with the 4-vector Jitter).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15k.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh /tmp/b/s15k "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
export DMOE_CACHE_DIR="$(mktemp -d)/cache"
timeout 250 /tmp/b/s15k/bench/routing_bench --json > "$OUT/routing.txt" 2>&1
echo "== routing exit $? t=$(( $(date +%s) - t0 ))"
grep -E " (chain|jitter) " "$OUT/routing.txt" | grep -E "T=(64|256)K|chain"

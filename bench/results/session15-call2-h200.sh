#!/usr/bin/env bash
# Session 15, device call 2: main 0392b82 (build-packs/s15n.tar.xz, a release build made here): every GPU
# test program (sharded), the whole routing benchmark (issue 3's table, now with the floor an unfused
# gather + scatter sets), then the layer at the two large presets with the time left.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s15n.tar.xz
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh /tmp/b/s15n "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
export DMOE_CACHE_DIR="$(mktemp -d)/cache"
timeout 250 /tmp/b/s15n/bench/routing_bench --json > "$OUT/routing.txt" 2>&1
echo "== routing exit $? t=$(( $(date +%s) - t0 ))"
grep -E " chain " "$OUT/routing.txt"
timeout $(( 590 - ($(date +%s) - t0) )) /tmp/b/s15n/tools/dmoe bench --layer --json \
  --presets deepseek-v3,mixtral-8x7b > "$OUT/layer.txt" 2>&1
echo "== layer exit $? t=$(( $(date +%s) - t0 ))"
grep -E "^(preset|deepseek|mixtral)|padding" "$OUT/layer.txt"

#!/usr/bin/env bash
# Session 17, device call 2: main 81e9a0b (build-packs/s17a.tar.xz: 192-column wgmma tiles, ping-pong 128×192
# with 192 accumulators). The sm90 product tests (sharded), then dmoe tune at MegaBlocks' H 768 shape
# (T 32768, F 3072, E 64), where 192 divides hidden and ffn, with the plain products and the dgelu SDD.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17a.tar.xz
B=/tmp/b/s17a
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_FILTER='sm90|spec|tuning' DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=200 \
  timeout 230 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
grep -E "192|ERROR" "$OUT/tests/all-tests.txt" | head -20
DMOE_CACHE_DIR=/tmp/ct timeout 200 $B/tools/dmoe tune --hidden 768 --ffn 3072 --experts 64 --tokens 32768 \
  --ops sdd_nt,dsd_nn,dsd_tn,sdd_nt+dgelu --budget 150 --plot "$OUT/tune-h768-192.svg" > "$OUT/tune-h768-192.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -E "x192|default|refused|spill" "$OUT/tune-h768-192.txt" | head -40
grep -A8 "^product " "$OUT/tune-h768-192.txt"

#!/usr/bin/env bash
# Session 17, device call 3: main (build-packs/s17b.tar.xz: ping-pong with chunked output staging, so
# 128×192 ping-pong gets 5 stages). The sm90 product tests (sharded), then dmoe tune at MegaBlocks' H 768
# shape (192 divides), at mb-46m (H 512) and at mb-356m: every candidate's time is in the logs.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17b.tar.xz
B=/tmp/b/s17b
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_FILTER='sm90|spec|tuning' DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=200 \
  timeout 230 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
tune() {  # name args...
  local n=$1; shift
  DMOE_CACHE_DIR=/tmp/ct-$n timeout 150 $B/tools/dmoe tune "$@" --plot "$OUT/tune-$n.svg" > "$OUT/tune-$n.txt" 2>&1
  echo "== tune $n exit $? t=$(( $(date +%s) - t0 ))"
  grep -E "\] wgmma (128x256x64 s3 |128x256x64 s4 st|128x192x64 s4 st|128x192x64 s[345].*pp|128x128x64 s[56].*pp|64x256x64 s[45].*pp)" "$OUT/tune-$n.txt" | head -40
  grep -A6 "^product " "$OUT/tune-$n.txt"
}
tune h768 --hidden 768 --ffn 3072 --experts 64 --tokens 32768 --budget 100
tune mb-46m --preset mb-46m --budget 100
tune mb-356m --preset mb-356m --budget 100

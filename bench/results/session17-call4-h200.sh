#!/usr/bin/env bash
# Session 17, device call 4: main (build-packs/s17c.tar.xz: chunked staging for the forward activation
# epilogues). The sm90 product tests (sharded); dmoe tune of the fused SDDs (+gelu with the pre-activation
# kept, +dgelu) at mb-46m, mb-356m and MegaBlocks' H 768 shape; then the layer at mb-356m and mb-46m with
# each preset's tuning database (all five products) against none, alternating, 2 rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17c.tar.xz
B=/tmp/b/s17c
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_FILTER='sm90|spec|tuning' DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=200 \
  timeout 230 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
tune() {  # name args...
  local n=$1; shift
  DMOE_CACHE_DIR=/tmp/ct-$n timeout 120 $B/tools/dmoe tune "$@" > "$OUT/tune-$n.txt" 2>&1
  echo "== tune $n exit $? t=$(( $(date +%s) - t0 ))"
  grep -E "\] wgmma (128x128x64 s[56] pp|128x128x64 s[56] pp st|128x256x64 s[34] st|128x192x64 s[345] pp st)" "$OUT/tune-$n.txt" | sed 's/ *eta.*//' | head -30
  grep -A7 "^product " "$OUT/tune-$n.txt"
}
tune mb-46m --preset mb-46m --ops sdd_nt,dsd_nn,dsd_tn,sdd_nt+gelu,sdd_nt+dgelu --budget 100
tune mb-356m --preset mb-356m --ops sdd_nt,dsd_nn,dsd_tn,sdd_nt+gelu,sdd_nt+dgelu --budget 100
tune h768 --hidden 768 --ffn 3072 --experts 64 --tokens 32768 --ops sdd_nt+gelu --budget 40
for r in 1 2; do
  for p in mb-356m mb-46m; do
    for c in plain tuned; do
      d=/tmp/cl-$p; [ $c = tuned ] && d=/tmp/ct-$p
      echo "##### $p $c round $r" >> "$OUT/layer-tuned.txt"
      DMOE_CACHE_DIR=$d timeout 60 $B/tools/dmoe bench --layer --json --presets $p >> "$OUT/layer-tuned.txt" 2>&1
      echo "== layer $p $c $r exit $? t=$(( $(date +%s) - t0 ))"
    done
  done
done
grep -E "#####|forward |backward |step " "$OUT/layer-tuned.txt"

#!/usr/bin/env bash
# Session 17, device call 5: main (build-packs/s17d.tar.xz: apply_tuning, the layer's scatter form keeps
# its default where it refuses the tuned tile). Every GPU test program (sharded); dmoe tune of all five
# of mb-356m's products (the layer's three plain ones and its fused SDDs); then the layer at mb-356m with
# that database against none, alternating, 3 rounds (call 4's tuned mb-356m layer failed to build).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17d.tar.xz
B=/tmp/b/s17d
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=170 \
  timeout 200 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_CACHE_DIR=/tmp/ct timeout 120 $B/tools/dmoe tune --preset mb-356m --ops sdd_nt,dsd_nn,dsd_tn,sdd_nt+gelu,sdd_nt+dgelu \
  --budget 100 --plot "$OUT/tune-mb-356m.svg" > "$OUT/tune-mb-356m.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -A7 "^product " "$OUT/tune-mb-356m.txt"
for r in 1 2 3; do
  for c in plain tuned; do
    d=/tmp/cl; [ $c = tuned ] && d=/tmp/ct
    echo "##### mb-356m $c round $r" >> "$OUT/layer-tuned.txt"
    DMOE_CACHE_DIR=$d timeout 60 $B/tools/dmoe bench --layer --json --presets mb-356m >> "$OUT/layer-tuned.txt" 2>&1
    echo "== layer $c $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|forward |backward |step |phases|failed" "$OUT/layer-tuned.txt"
DMOE_CACHE_DIR=/tmp/ct timeout 30 $B/tools/dmoe run --preset mb-356m > "$OUT/run-tuned.txt" 2>&1
echo "== run tuned exit $? t=$(( $(date +%s) - t0 ))"
tail -5 "$OUT/run-tuned.txt"

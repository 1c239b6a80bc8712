#!/usr/bin/env bash
# Session 17, device call 1: main 0ed7566 (build-packs/s17m.tar.xz). Every GPU test program (sharded: the
# 624971c refactor of product_bench and dmoe tune had not run on a GPU); dmoe tune --preset mb-356m into its
# own cache, then the layer at mb-356m with and without that tuning database, alternating (3 rounds each);
# Nsight Compute source counters of the H 512 weight gradient (DSD TN), where the tensor cores idle.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17m.tar.xz
B=/tmp/b/s17m
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
DMOE_CACHE_DIR=/tmp/ctuned timeout 70 $B/tools/dmoe tune --preset mb-356m --budget 45 > "$OUT/tune-mb-356m.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -A4 "^product " "$OUT/tune-mb-356m.txt"
for r in 1 2 3; do
  for c in plain tuned; do
    echo "##### $c round $r" >> "$OUT/layer-tuned.txt"
    DMOE_CACHE_DIR=/tmp/c$c timeout 60 $B/tools/dmoe bench --layer --json --presets mb-356m >> "$OUT/layer-tuned.txt" 2>&1
    echo "== layer $c $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|step " "$OUT/layer-tuned.txt"
DMOE_CACHE_DIR=/tmp/cncu timeout 150 tools/ncu-source.sh 'dsd_tn.*h512' "$OUT/ncu-dsd-tn-h512" $B/bench/product_bench \
  --filter 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::GradW' --reps 1
echo "== ncu exit $? t=$(( $(date +%s) - t0 ))"
head -40 "$OUT/ncu-dsd-tn-h512/source.txt"

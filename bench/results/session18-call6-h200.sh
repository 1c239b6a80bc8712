#!/usr/bin/env bash
# Session 18, device call 6. Build s18c = main 8185917. Do the activation warps pay at mb-356m's fused SDDs
# (H 1024, 16 reduction steps; the default there is ping-pong)? dmoe tune of both fused SDDs (the aw
# candidates beside the others), then the mb-356m layer with and without that database, 3 rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18c.tar.xz
B=/tmp/b/s18c
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_CACHE_DIR=/tmp/ct timeout 100 $B/tools/dmoe tune --preset mb-356m --ops sdd_nt+gelu,sdd_nt+dgelu --budget 50 > "$OUT/tune-fused-mb-356m.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -A6 "^product " "$OUT/tune-fused-mb-356m.txt"
grep -E " aw " "$OUT/tune-fused-mb-356m.txt" | sort -t' ' -k1,1 | head -12
for r in 1 2 3; do
  for c in plain tuned; do
    d=/tmp/cl; [ $c = tuned ] && d=/tmp/ct
    echo "##### $c round $r" >> "$OUT/layer.txt"
    DMOE_CACHE_DIR=$d timeout 40 $B/tools/dmoe bench --layer --json --presets mb-356m >> "$OUT/layer.txt" 2>&1
    echo "== layer $c $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|^mb-356m|tiles:" "$OUT/layer.txt"

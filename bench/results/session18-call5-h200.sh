#!/usr/bin/env bash
# Session 18, device call 5. Build s18c = main 8185917. The gated SDD with the activation warps (v36c, not
# a default: its g tile costs one of four stages): dmoe tune of the gated forward SDD at Mixtral (the
# activation-warp candidates beside the others), then the Mixtral layer with and without that tuning
# database, alternating, 3 rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18c.tar.xz
B=/tmp/b/s18c
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
for p in mixtral-8x7b; do
  DMOE_CACHE_DIR=/tmp/ct timeout 80 $B/tools/dmoe tune --preset $p --ops sdd_nt+silu+glu --budget 25 > "$OUT/tune-gated-$p.txt" 2>&1
  echo "== tune $p exit $? t=$(( $(date +%s) - t0 ))"
  grep -A6 "^product " "$OUT/tune-gated-$p.txt"
done
for r in 1 2 3; do
  for c in plain tuned; do
    d=/tmp/cl; [ $c = tuned ] && d=/tmp/ct
    echo "##### $c round $r" >> "$OUT/layer.txt"
    DMOE_CACHE_DIR=$d timeout 40 $B/tools/dmoe bench --layer --json --presets mixtral-8x7b >> "$OUT/layer.txt" 2>&1
    echo "== layer $c $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|^mixtral|tiles:" "$OUT/layer.txt"

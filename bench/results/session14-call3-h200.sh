#!/usr/bin/env bash
# Session 14 call 3: main b119aef (build-packs/s14b.tar.xz): the layer benchmark with the pipelined timing
# (each timed step enqueued while the GPU runs the one before; the idle-GPU figures and the host's enqueue
# time beside), every preset, two rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14b.tar.xz
export DMOE_CACHE_DIR=/tmp/cache-s14b
for round in 1 2; do
  timeout 200 /tmp/b/s14b/tools/dmoe bench --layer --check --json \
    --presets mb-46m,mb-356m,mixtral-8x7b,fine-grained,deepseek-v3 > "$OUT/layer-round$round.txt" 2>&1
  echo "== round $round exit $? t=$(( $(date +%s) - t0 ))"
  grep -v '^{' "$OUT/layer-round$round.txt" | grep -E "^ceilings|^dmoe run|forward|backward|step|idle|phases|check|^preset|^mb|^mix|^fine|^deep"
done

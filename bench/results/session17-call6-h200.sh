#!/usr/bin/env bash
# Session 17, device call 6: main (build-packs/s17e.tar.xz): the layer report's new "tiles" line. dmoe tune of
# mb-356m's DSD NN and DSD TN into a fresh cache, then dmoe run --preset mb-356m with that database and
# without one, and dmoe bench --layer --json with it.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17e.tar.xz
B=/tmp/b/s17e
DMOE_CACHE_DIR=/tmp/ct timeout 60 $B/tools/dmoe tune --preset mb-356m --ops dsd_nn,dsd_tn --budget 40 > "$OUT/tune.txt" 2>&1
echo "== tune exit $? t=$(( $(date +%s) - t0 ))"
grep -A3 "^product " "$OUT/tune.txt"
DMOE_CACHE_DIR=/tmp/ct timeout 40 $B/tools/dmoe run --preset mb-356m > "$OUT/run.txt" 2>&1
echo "== run tuned exit $? t=$(( $(date +%s) - t0 ))"
DMOE_CACHE_DIR=/tmp/cp timeout 40 $B/tools/dmoe run --preset mb-356m >> "$OUT/run.txt" 2>&1
echo "== run plain exit $? t=$(( $(date +%s) - t0 ))"
DMOE_CACHE_DIR=/tmp/ct timeout 60 $B/tools/dmoe bench --layer --json --presets mb-356m > "$OUT/layer.txt" 2>&1
echo "== layer exit $? t=$(( $(date +%s) - t0 ))"
grep -E "tiles:|step |verified" "$OUT/run.txt" "$OUT/layer.txt"
grep -o '"products": [0-9]*, "tuned_products": [0-9]*' "$OUT/layer.txt"

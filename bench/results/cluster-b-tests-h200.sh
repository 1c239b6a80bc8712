#!/usr/bin/env bash
# Session 14 call 5: which sm90 cluster case failed in call 4 (its output was cut): the A-multicast and
# B-multicast cluster cases of next/cluster-b (s14c) and the A-multicast case of main (s14b), full output.
set -uo pipefail
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14c.tar.xz && tar -C /tmp/b -xJf build-packs/s14b.tar.xz
for b in s14c s14b; do
  for tc in "*sharing B*" "*2-CTA clusters (A*"; do
    [ $b = s14b ] && [ "$tc" = "*sharing B*" ] && continue
    DMOE_CACHE_DIR=/tmp/cache-$b timeout 120 /tmp/b/$b/tests/runtime_sm90_products_test -tc="$tc" > "$OUT/$b-${tc//[^a-zA-Z0-9]/_}.txt" 2>&1
    echo "== $b $tc exit $?"
    grep -B3 -A12 "ERROR\|FAILED\|CHECK(" "$OUT/$b-${tc//[^a-zA-Z0-9]/_}.txt" | head -60
    tail -3 "$OUT/$b-${tc//[^a-zA-Z0-9]/_}.txt"
  done
done

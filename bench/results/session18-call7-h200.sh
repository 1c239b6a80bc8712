#!/usr/bin/env bash
# Session 18, device call 7. Build s18d = next/pp-aw (product v37: the activation warps for ping-pong tiles;
# the forward activation warps at 40 registers again). The activation-warp GPU test case (now with
# ping-pong tiles), then every fused SDD row with --act-warps 1 (the ping-pong rows: ping-pong with the
# activation warps; the cooperative rows: as in the v11 table but for the forward's register split), to
# compare with call 4's v11 table (paired column).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18d.tar.xz
B=/tmp/b/s18d
DMOE_CACHE_DIR=/tmp/ct timeout 80 $B/tests/runtime_sm90_products_test -tc='*activation warps*' --duration=true > "$OUT/tests.txt" 2>&1
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
grep -c "rel err" "$OUT/tests.txt"; grep -E "ERROR|THREW" "$OUT/tests.txt" | head -5; tail -3 "$OUT/tests.txt"
DMOE_CACHE_DIR=/tmp/cb timeout 125 $B/bench/product_bench --json --act-warps 1 --filter 'SDD::NT+' > "$OUT/fused-aw.txt" 2>&1
echo "== bench exit $? t=$(( $(date +%s) - t0 ))"
grep -E "::NT\+" "$OUT/fused-aw.txt" | grep -v "^{"

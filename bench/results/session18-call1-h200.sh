#!/usr/bin/env bash
# Session 18, device call 1. Builds: s18m = main 2d28ec6, s18x = next/mc-split rebased on it (product v35:
# each CTA of a 2-CTA cluster issues half of the shared A with the multicast mask).
# 1. v35's 2-CTA cluster test case (every op and layout, both schedules, fused epilogues).
# 2. product_bench at H 512 and H 4096: main --cluster 1 and 2, v35 --cluster 2.
# 3. Where the fused forward epilogue's time goes at the large shapes (cooperative 128×256: the tensor cores
#    idle during the epilogue): Nsight Compute source counters of the H 4096 +gelu and Mixtral +silu SDDs.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && for p in s18m s18x; do tar -C /tmp/b -xJf build-packs/$p.tar.xz; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_CACHE_DIR=/tmp/cx timeout 170 /tmp/b/s18x/tests/sm90_products_test -tc='*2-CTA clusters*' --duration=true > "$OUT/mc-tests.txt" 2>&1
echo "== mc tests exit $? t=$(( $(date +%s) - t0 ))"
tail -4 "$OUT/mc-tests.txt"
for b in s18m@1 s18m@2 s18x@2; do
  c=${b#*@} b=${b%@*}
  for f in 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::' 'T=8192 H=4096 F=16384 E=4 K=1 uniform 0::'; do
    echo "##### $b c$c '$f'" >> "$OUT/cluster.txt"
    DMOE_CACHE_DIR=/tmp/c-$b timeout 60 /tmp/b/$b/bench/product_bench --cluster $c --filter "$f" >> "$OUT/cluster.txt" 2>&1
    echo "== $b c$c exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|::" "$OUT/cluster.txt" | grep -v "^{" | head -80
export DMOE_CACHE_DIR=/tmp/c-s18m
timeout 100 tools/ncu-source.sh 'sdd_nt.*h4096_f16384.*gelu' "$OUT/ncu-h4096-gelu" /tmp/b/s18m/bench/product_bench --reps 1 --filter 'T=8192 H=4096 F=16384 E=4 K=1 uniform 0::Fwd::SDD::NT+gelu'
echo "== ncu gelu t=$(( $(date +%s) - t0 ))"
head -40 "$OUT/ncu-h4096-gelu/source.txt"
timeout 120 tools/ncu-source.sh 'sdd_nt.*h4096_f14336.*silu' "$OUT/ncu-mixtral-silu" /tmp/b/s18m/bench/product_bench --reps 1 --filter 'T=16384 H=4096 F=14336 E=8 K=2 uniform 0::Fwd::SDD::NT+silu'
echo "== ncu silu t=$(( $(date +%s) - t0 ))"
head -40 "$OUT/ncu-mixtral-silu/source.txt"

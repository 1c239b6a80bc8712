#!/usr/bin/env bash
# Session 16, device call 3: is the large shapes' gap to cuBLAS a clock gap under the power cap? Call 2's
# Nsight Compute runs (one isolated launch each) put dmoe's Mixtral SDD NT at cuBLAS's time (4.71 vs
# 4.70-4.85 ms), while product_bench's sustained batches put it at 0.94x. Here nvidia-smi samples the SM
# clock and the power every 20 ms while product_bench times dmoe's product and then cuBLAS's (long batches:
# --reps 60), main ef68c50 (build-packs/s16m.tar.xz). The phases are separated by the idle gaps of the
# operand fills.
set -uo pipefail
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16m.tar.xz
B=/tmp/b/s16m
export DMOE_CACHE_DIR=/tmp/smi-cache
i=0
for f in 'E=8 K=2 uniform 0::Fwd::SDD::NT' 'E=256 K=8 uniform 0::GradW::DSD::TN'; do
  i=$((i + 1))
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader -lms 20 > "$OUT/smi-$i.csv" &
  smi=$!
  timeout 200 $B/bench/product_bench --reps 60 --filter "$f" > "$OUT/bench-$i.txt" 2>&1
  echo "== $i '$f' exit $?"
  kill $smi
  grep -v '^{' "$OUT/bench-$i.txt" | tail -6
done

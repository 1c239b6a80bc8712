#!/usr/bin/env bash
# Session 16, device call 2: main ef68c50 (build-packs/s16m.tar.xz, a release build made here): every GPU
# test program (sharded); then Nsight Compute counters of dmoe's products and of cuBLAS's kernels for the
# same problems, to compare the L2 traffic per FLOP (v32 pointed at the operands' L2 → SM stream):
# Mixtral SDD NT (uniform), DeepSeek-V3 DSD TN (uniform), H 512 SDD NT; and dmoe's 2-CTA cluster (c2) at
# Mixtral with its launch and occupancy sections.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16m.tar.xz
B=/tmp/b/s16m
DMOE_TEST_JOBS=6 DMOE_TEST_TIMEOUT=150 \
  timeout 175 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
ncu --query-metrics 2>/dev/null | grep -iE "gmma|lts__t_sectors_srcunit|lts__t_bytes " | head -20 > "$OUT/ncu-metric-names.txt"
M=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_bytes.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_write.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__cluster_dim_x,launch__cluster_dim_y
export DMOE_CACHE_DIR=/tmp/ncu-cache
i=0
for f in 'E=8 K=2 uniform 0::Fwd::SDD::NT' 'E=256 K=8 uniform 0::GradW::DSD::TN' 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::Fwd::SDD::NT'; do
  i=$((i + 1))
  timeout 150 ncu --clock-control none --csv --metrics $M --launch-count 200 \
    $B/bench/product_bench --reps 1 --filter "$f" > "$OUT/ncu-$i.csv" 2> "$OUT/ncu-$i.err"
  echo "== ncu $i '$f' exit $? t=$(( $(date +%s) - t0 )) lines $(wc -l < "$OUT/ncu-$i.csv")"
done
timeout 100 ncu --clock-control none --kernel-name regex:dmoe_sdd --launch-skip 1 --launch-count 1 \
  --section LaunchStats --section Occupancy --section SpeedOfLight --metrics $M \
  $B/bench/product_bench --reps 1 --cluster 2 --filter 'E=8 K=2 uniform 0::Fwd::SDD::NT' > "$OUT/ncu-c2.txt" 2>&1
echo "== ncu c2 exit $? t=$(( $(date +%s) - t0 ))"
timeout 100 ncu --clock-control none --kernel-name regex:dmoe_sdd --launch-skip 1 --launch-count 1 \
  --section LaunchStats --section Occupancy --section SpeedOfLight --metrics $M \
  $B/bench/product_bench --reps 1 --filter 'E=8 K=2 uniform 0::Fwd::SDD::NT' > "$OUT/ncu-c1.txt" 2>&1
echo "== ncu c1 exit $? t=$(( $(date +%s) - t0 ))"

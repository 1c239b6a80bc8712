#!/usr/bin/env bash
# Session 17, device call 8: main (build-packs/s17e.tar.xz). Why does dmoe's 2-CTA cluster (c2, A multicast)
# count more L2 bytes than c1 (session 16: +49 % at Mixtral)? One launch each of the H 512 weight gradient
# (DSD TN) with --cluster 1 and 2, and the H 512 SDD, under Nsight Compute with the L2 counters split by
# source unit (SM traffic, the L2 partitions' fabric) and the L2 → SM crossbar bytes, from the metric names
# this ncu knows.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17e.tar.xz
B=/tmp/b/s17e
ncu --query-metrics 2>/dev/null | awk '{print $1}' > /tmp/names.txt
grep -E "^(lts__t_sectors_srcunit_|lts__t_bytes$|lts__t_sectors$|lts__t_sectors_op_read$|lts__t_sectors_op_write$|l1tex__m_xbar2l1tex_read_bytes$|dram__bytes_read$|dram__bytes_write$|lts__t_sectors_lookup_hit$|lts__t_sectors_lookup_miss$)" /tmp/names.txt > "$OUT/metric-names.txt"
M=gpu__time_duration.sum
while read -r n; do M="$M,$n.sum"; done < "$OUT/metric-names.txt"
echo "metrics: $M"
export DMOE_CACHE_DIR=/tmp/ncu-cache
for c in 1 2; do
  for f in 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::GradW' 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::Fwd::SDD::NT'; do
    timeout 80 ncu --clock-control none --csv --kernel-name 'regex:dmoe_(dsd_tn|sdd_nt)_bf16_b128_h512_f2048_e64_wg128x256x64s3(c2)?_sm90a' --launch-skip 1 --launch-count 1 --metrics "$M" \
      $B/bench/product_bench --reps 1 --cluster $c --filter "$f" > /tmp/ncu.csv 2> /tmp/ncu.err
    echo "== c$c '$f' exit $? t=$(( $(date +%s) - t0 ))"
    { echo "##### cluster $c '$f'"; grep -E '^"' /tmp/ncu.csv; } >> "$OUT/ncu-c1-c2.csv"
    tail -3 /tmp/ncu.err
  done
done
python3 - "$OUT/ncu-c1-c2.csv" <<'PY'
import csv, sys, io
blocks = open(sys.argv[1]).read().split('##### ')[1:]
for b in blocks:
    head, _, body = b.partition('\n')
    rows = list(csv.reader(io.StringIO(body)))
    if not rows: print(head, 'no rows'); continue
    cols = rows[0]
    iname, imet, ival = cols.index('Kernel Name'), cols.index('Metric Name'), cols.index('Metric Value')
    print('==', head, rows[1][iname][:70] if len(rows) > 1 else '')
    for r in rows[1:]:
        print(f'  {r[imet]:55s} {r[ival]:>20s} {r[cols.index("Metric Unit")]}')
PY

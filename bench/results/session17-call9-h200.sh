#!/usr/bin/env bash
# Session 17, device call 9: main (build-packs/s17e.tar.xz). Call 8's counters for cuBLAS's kernels at the
# H 512 SDD NT's same-FLOP dense product (the 4 algorithms product_bench times, several with 2x1 clusters):
# does a cuBLAS cluster deliver the same crossbar bytes, and read fewer L2 sectors than dmoe's c1?
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17e.tar.xz
B=/tmp/b/s17e
M=gpu__time_duration.sum,l1tex__m_xbar2l1tex_read_bytes.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_ltcfabric.sum,dram__bytes_read.sum,launch__cluster_dim_x,launch__cluster_dim_y,launch__grid_size
DMOE_CACHE_DIR=/tmp/ncu-cache timeout 150 ncu --clock-control none --csv --kernel-name regex:nvjet --launch-count 40 --metrics "$M" \
  $B/bench/product_bench --reps 1 --filter 'T=65536 H=512 F=2048 E=64 K=1 uniform 0::Fwd::SDD::NT' > /tmp/ncu.csv 2> /tmp/ncu.err
echo "== ncu exit $? t=$(( $(date +%s) - t0 ))"
grep -E '^"' /tmp/ncu.csv > "$OUT/ncu-cublas.csv"
tail -3 /tmp/ncu.err
python3 - "$OUT/ncu-cublas.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
cols = rows[0]
ii, ik, im, iv = cols.index('ID'), cols.index('Kernel Name'), cols.index('Metric Name'), cols.index('Metric Value')
last = {}
for r in rows[1:]:
    last.setdefault(r[ik], {}).setdefault(r[ii], {})[r[im]] = r[iv]
for k, launches in last.items():
    d = launches[max(launches, key=int)]
    print(f'{k[:60]:60s} n={len(launches):2d} ' + ' '.join(f'{m.split("__")[1][:28]}={v}' for m, v in d.items()))
PY

#!/usr/bin/env bash
# Session 18, device call 2. Build s18a = next/act-warps cf3ce1f (product v36: the activation warps).
# 1. v36's GPU test case, and the fused epilogue case (unchanged kernels) beside it.
# 2. Every forward activation SDD row of the product table with and without --act-warps, alternating,
#    2 rounds (where the default tile is ping-pong, --act-warps does not apply: those rows are the noise
#    control). Call 1's ncu: at H 4096 +gelu and Mixtral +silu the cooperative consumers spend their
#    epilogue on STSM, the activation's MUFU and FMUL/FFMA, and the barrier while the tensor cores idle.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18a.tar.xz
B=/tmp/b/s18a
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_CACHE_DIR=/tmp/ct timeout 200 $B/tests/runtime_sm90_products_test -tc='*activation warps*,*fused activation*' --duration=true > "$OUT/tests.txt" 2>&1
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
grep -E "rel err" "$OUT/tests.txt" | grep -c aw
tail -4 "$OUT/tests.txt"
for r in 1 2; do
  for v in base aw; do
    flag=""; [ $v = aw ] && flag="--act-warps"
    echo "##### $v round $r" >> "$OUT/fused.txt"
    DMOE_CACHE_DIR=/tmp/c-$v timeout 150 $B/bench/product_bench --json $flag --filter '0::Fwd::SDD::NT+' >> "$OUT/fused.txt" 2>&1
    echo "== $v round $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
grep -E "#####|::" "$OUT/fused.txt" | grep -v "^{"
python3 - "$OUT/fused.txt" <<'PY'
import json, sys, collections
cur = None; rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if line.startswith('#####'): cur = line.split()[1]; continue
    if line.startswith('{'):
        j = json.loads(line)
        if j.get('type') != 'product': continue
        rows[(j['problem'], cur)].append((j['dmoe_ms'], j.get('paired_vs_dense'), j['kernel']))
probs = sorted({p for p, _ in rows})
print(f"{'problem':70s} {'base ms':>9s} {'aw ms':>9s} {'aw/base':>8s} {'paired b':>9s} {'paired aw':>9s}  aw kernel")
for p in probs:
    b = rows.get((p, 'base'), []); a = rows.get((p, 'aw'), [])
    if not b or not a: continue
    bm = sum(x[0] for x in b) / len(b); am = sum(x[0] for x in a) / len(a)
    pb = [x[1] for x in b if x[1]]; pa = [x[1] for x in a if x[1]]
    f = lambda v: f"{sum(v)/len(v):9.3f}" if v else f"{'-':>9s}"
    print(f"{p:70s} {bm:9.4f} {am:9.4f} {am/bm:8.3f} {f(pb)} {f(pa)}  {a[-1][2]}")
PY

#!/usr/bin/env bash
# Session 18, device call 3. Build s18b = next/act-warps 7200cfc (product v36b: the activation warps also
# finish the gradient epilogues, and are the default of the cooperative activation SDDs).
# 1. The whole sm90 products test program (sharded by test case).
# 2. Every gradient-epilogue SDD row with the activation warps (the new default) and without
#    (--act-warps 0), alternating, 2 rounds.
# 3. The forward and gradient activation SDDs with every product cooperative (`--schedule cooperative`:
#    128×256 with the activation warps) against the defaults (ping-pong at H ≤ 2048), one round each.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s18b.tar.xz
B=/tmp/b/s18b
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
DMOE_TEST_FILTER='sm90_products' DMOE_TEST_JOBS=8 DMOE_TEST_TIMEOUT=170 \
  timeout 200 tools/gpu-tests.sh $B "$OUT/tests" | grep -E "PASS|FAIL|passed|failed|TIMEOUT"
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
grep -c "aw extra" "$OUT/tests/all-tests.txt"
gzip -f "$OUT/tests/all-tests.txt"
for r in 1 2; do
  for v in 0 1; do
    echo "##### aw$v round $r" >> "$OUT/grad.txt"
    DMOE_CACHE_DIR=/tmp/c-$v timeout 120 $B/bench/product_bench --json --act-warps $v --filter '::NT+d' >> "$OUT/grad.txt" 2>&1
    echo "== aw$v round $r exit $? t=$(( $(date +%s) - t0 ))"
  done
done
for v in default cooperative; do
  sched=""; [ $v = cooperative ] && sched="--schedule cooperative"
  echo "##### $v" >> "$OUT/schedule.txt"
  DMOE_CACHE_DIR=/tmp/c-1 timeout 120 $B/tools/dmoe bench --products --json $sched --filter 'SDD::NT+' >> "$OUT/schedule.txt" 2>&1
  echo "== $v exit $? t=$(( $(date +%s) - t0 ))"
done
for f in grad schedule; do
python3 - "$OUT/$f.txt" <<'PY'
import json, sys, collections
cur = None; rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    if line.startswith('#####'): cur = line.split()[1]; continue
    if line.startswith('{'):
        j = json.loads(line)
        if j.get('type') != 'product': continue
        rows[j['problem']].setdefault(cur, []).append(j)
for p, v in rows.items():
    out = []
    for k, js in v.items():
        pd = [j['paired_dmoe_ms'] for j in js if 'paired_dmoe_ms' in j]
        pr = [j['paired_vs_dense'] for j in js if 'paired_vs_dense' in j]
        ms = sum(j['dmoe_ms'] for j in js) / len(js)
        out.append(f"{k}: {ms:.4f} ms" + (f" paired {sum(pd)/len(pd):.4f} ms {sum(pr)/len(pr):.3f}x" if pd else "") + f" [{js[-1]['kernel'].split('_wg')[1][:22]}]")
    print(f"{p[:64]:64s} " + " | ".join(out))
PY
done

#!/usr/bin/env bash
# Session 14 call 4: product v28 (next/cluster-b 8d0cf4d, build-packs/s14c.tar.xz): the B-multicast
# cluster's GPU tests, then the weight-gradient products (DSD TN rows of product_bench) with the default
# tile (c1), A multicast (--cluster 2) and B multicast (--multicast-b), two alternating rounds.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s14c.tar.xz
B=/tmp/b/s14c
export DMOE_CACHE_DIR=/tmp/cache-s14c
timeout 150 $B/tests/runtime_sm90_products_test -tc="*sharing B*,*2-CTA clusters (A*,*every op in every*" 2>&1 | tail -6
echo "== tests exit $? t=$(( $(date +%s) - t0 ))"
for round in 1 2; do
  for cfg in c1 c2 c2b; do
    flags=""; [ $cfg = c2 ] && flags="--cluster 2"; [ $cfg = c2b ] && flags="--multicast-b"
    timeout 90 $B/bench/product_bench --filter "DSD::TN" --json $flags > "$OUT/tn-$cfg-r$round.txt" 2>&1
    echo "== $cfg round $round exit $? t=$(( $(date +%s) - t0 ))"
  done
done
python3 - "$OUT" <<'PY'
import json, sys, glob, collections
rows = collections.defaultdict(dict)
for f in sorted(glob.glob(sys.argv[1] + "/tn-*.txt")):
    cfg = f.split("tn-")[1].split("-r")[0]
    for line in open(f):
        if not line.startswith("{"): continue
        d = json.loads(line)
        if d.get("type") == "header" or "dmoe_ms" not in d: continue
        key = (d.get("problem", ""), d.get("product", ""))
        rows[key].setdefault(cfg, []).append((d["dmoe_ms"], d.get("kernel", "")))
print(f"{'problem':<58} {'product':<20} {'c1 ms':>8} {'c2 ms':>8} {'c2b ms':>8} {'c2b/c1':>7}")
for (p, prod), v in rows.items():
    m = {c: sum(x[0] for x in v.get(c, [])) / max(1, len(v.get(c, []))) for c in ("c1", "c2", "c2b")}
    print(f"{p:<58} {prod:<20} {m['c1']:8.3f} {m['c2']:8.3f} {m['c2b']:8.3f} {m['c2b'] / m['c1'] if m['c1'] else 0:7.3f}")
PY

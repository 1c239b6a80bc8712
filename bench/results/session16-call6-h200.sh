#!/usr/bin/env bash
# Session 16, device call 6: dmoe tune with the paired confirmation (main, build-packs/s16t.tar.xz): the
# best candidate against the default in alternating batches, recorded only at >= 1.01x. Issue 6's runs:
# mb-356m (must finish within 5 minutes; with its plot), then MegaBlocks' four shapes and fine-grained
# (Zipf), 45 s budgets, each with its own database and cache.
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s16t.tar.xz
D=/tmp/b/s16t/tools/dmoe
run() {  # name args...
  local name=$1; shift
  local s=$(date +%s)
  DMOE_CACHE_DIR=/tmp/tc-$name timeout 150 $D tune "$@" --budget 45 > "$OUT/tune-$name.txt" 2>&1
  echo "== $name exit $? $(( $(date +%s) - s )) s (t=$(( $(date +%s) - t0 )))"
  grep -A8 "^product " "$OUT/tune-$name.txt"
}
run mb-356m --preset mb-356m --plot "$OUT/tune-mb-356m.svg"
run h512 --tokens 65536 --hidden 512 --ffn 2048 --experts 64
run h768 --tokens 32768 --hidden 768 --ffn 3072 --experts 64
run h1024 --tokens 8192 --hidden 1024 --ffn 4096 --experts 64
run h4096 --tokens 8192 --hidden 4096 --ffn 16384 --experts 4
run fine-zipf --preset fine-grained --routing zipf

#!/usr/bin/env bash
# Session 17, device call 7: main (build-packs/s17e.tar.xz): dmoe tune with this session's new candidates
# (192-column tiles, chunked ping-pong staging) at the three of session 16's issue-6 shapes that calls 3-5
# did not cover: MegaBlocks' H 1024 and H 4096 shapes and fine-grained with Zipf routing (45 s budgets).
set -uo pipefail
t0=$(date +%s)
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/s17e.tar.xz
D=/tmp/b/s17e/tools/dmoe
run() {  # name args...
  local name=$1; shift
  local s=$(date +%s)
  DMOE_CACHE_DIR=/tmp/tc-$name timeout 110 $D tune "$@" --budget 45 > "$OUT/tune-$name.txt" 2>&1
  echo "== $name exit $? $(( $(date +%s) - s )) s (t=$(( $(date +%s) - t0 )))"
  grep -A8 "^product " "$OUT/tune-$name.txt"
}
run h1024 --tokens 8192 --hidden 1024 --ffn 4096 --experts 64
run h4096 --tokens 8192 --hidden 4096 --ffn 16384 --experts 4
run fine-zipf --preset fine-grained --routing zipf

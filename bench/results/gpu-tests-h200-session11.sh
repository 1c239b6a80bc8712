#!/usr/bin/env bash
# Session 11, device call 4: GPU test cases whose default tiles changed with v24 (DDS NN/TN now 128x256), at 7f77a23.
# Expects build-packs/<name>.tar.xz from tools/pack-run.sh for v25 (7f77a23), carried to the device; writes to $OUT.
set -uo pipefail
t0=$(date +%s); left() { echo $(( 290 - ($(date +%s) - t0) )); }
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/v25.tar.xz && B=/tmp/b/v25
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
export DMOE_CACHE_DIR=$(mktemp -d)/c DMOE_EXE=$B/tools/dmoe
t() {  # program, test-case filter
  [ "$(left)" -lt 25 ] && { echo "== skip $1 '$2' (time)"; return; }
  echo "##### $1 -tc='$2'" >> $OUT/tests.txt
  timeout $(( $(left) - 5 )) $B/tests/$1 ${2:+-tc="$2"} --duration=true >> $OUT/tests.txt 2>&1
  echo "== $1 '$2' exit $? t=$(( $(date +%s) - t0 ))"
}
for tc in '*fp16*' '*block sizes 64 and 256*' '*degenerate routings*' '*capacity beyond*' '*many tiles per CTA*' '*tile orders*'; do
  t runtime_sm90_products_test "$tc"
done
t runtime_c_api_test ''
t runtime_sm90_products_test '*2-CTA clusters*'
grep -E '^#####|^\[doctest\] (test cases|assertions)|ERROR|FATAL' $OUT/tests.txt | head -60

#!/usr/bin/env bash
# Session 12, device call 2: GPU tests of v26 (SiLU/GELU math) + v27 (stmatrix/ldmatrix staging) together
# (branch next/silu-stsm, build-packs/ss.tar.xz from tools/pack-run.sh): the whole sm90 products suite,
# then the Glu, C ABI and layer suites with what time is left. Writes $OUT/tests.txt.
set -uo pipefail
t0=$(date +%s); left() { echo $(( 575 - ($(date +%s) - t0) )); }
mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/ss.tar.xz
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
export DMOE_CACHE_DIR=$(mktemp -d)/c
for t in runtime_sm90_products_test runtime_glu_test runtime_c_api_test runtime_layer_test; do
  l=$(left); [ "$l" -lt 20 ] && { echo "== skip $t (time)"; continue; }
  echo "##### ss $t" >> $OUT/tests.txt
  timeout $(( l - 5 )) /tmp/b/ss/tests/$t --duration=true >> $OUT/tests.txt 2>&1
  echo "== $t exit $? t=$(( $(date +%s) - t0 ))"
done
grep -E '^#####|^\[doctest\] (test cases|assertions)|FAILED|ERROR' $OUT/tests.txt | head -40

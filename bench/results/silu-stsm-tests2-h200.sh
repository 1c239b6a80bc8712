#!/usr/bin/env bash
# Session 12, device call 3: the rest of next/silu-stsm's GPU tests (the sm90 cases call 2 did not reach
# within 570 s: scatter, gather, gated; then the Glu, C ABI and layer suites), then the layer benchmark
# of every preset and the product bench of two problems, main (22bd581 kernels) and ss alternating.
set -uo pipefail
t0=$(date +%s); left() { echo $(( 575 - ($(date +%s) - t0) )); }
for b in ss main; do mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/$b.tar.xz; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
export DMOE_CACHE_DIR=/tmp/cache-ss
step() {  # log, limit, command...
  local log=$1 lim=$2; shift 2
  l=$(left); [ "$l" -lt 25 ] && { echo "== skip $* (time)"; return; }
  [ "$lim" -gt $(( l - 5 )) ] && lim=$(( l - 5 ))
  echo "##### $*" >> $OUT/$log
  timeout $lim "$@" >> $OUT/$log 2>&1
  echo "== $(basename $1) $2 exit $? t=$(( $(date +%s) - t0 ))"
}
step tests.txt 260 /tmp/b/ss/tests/runtime_sm90_products_test --duration=true -tc='*scattering its rows*,*gathering its A rows*,*the gated SDD*'
for t in runtime_glu_test runtime_c_api_test runtime_layer_test; do step tests.txt 120 /tmp/b/ss/tests/$t --duration=true; done
grep -E '^#####|^\[doctest\] (test cases|assertions)|FAILED|ERROR' $OUT/tests.txt | head -40
step layer.txt 150 /tmp/b/ss/tools/dmoe bench --layer --check --json --presets mb-46m,mb-356m,mixtral-8x7b,fine-grained,deepseek-v3
for f in 'T=32768 H=768' 'H=4096 F=14336 E=8 K=2 uniform'; do
  for b in main ss; do DMOE_CACHE_DIR=/tmp/cache-$b step products.txt 60 /tmp/b/$b/bench/product_bench --json --filter "$f"; done
done
grep -E '^(preset|mb-|mixtral|fine|deepseek)' $OUT/layer.txt

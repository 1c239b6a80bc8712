#!/usr/bin/env bash
# Prepared in session 12 for the next device call: every GPU test program of main and of next/routing-v6
# (routing v6a + v6b + v6c), each test case its own process (tools/gpu-tests.sh, DMOE_TEST_JOBS), main
# first. Expects build-packs/main.tar.xz and build-packs/r6.tar.xz (tools/pack-run.sh, all test programs).
# Writes $OUT/<build>/all-tests.txt and prints each program's PASS/FAIL line.
set -uo pipefail
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
for b in main r6; do
  mkdir -p /tmp/b && tar -C /tmp/b -xJf build-packs/$b.tar.xz
  left=$(( 570 - ($(date +%s) - t0) ))
  [ "$left" -lt 60 ] && { echo "== skip $b (time)"; continue; }
  echo "===== $b (t=$(( $(date +%s) - t0 )) s)"
  DMOE_TEST_JOBS=${JOBS:-6} DMOE_TEST_TIMEOUT=$(( left < 240 ? left - 10 : 230 )) \
    timeout $(( left - 5 )) tools/gpu-tests.sh /tmp/b/$b "$OUT/$b"
  echo "== $b exit $? t=$(( $(date +%s) - t0 ))"
done

#!/usr/bin/env bash
# Prepared in session 12: routing v6 against main in one device call. Three arms: main, r6 (v6a + v6b +
# v6c) and r6 with DMOE_PDL=0 (v6a + v6b alone); routing kernels at T 64K/256K (E 64, K 1) and DeepSeek's
# E 256 K 8, then the layer presets where routing matters; two rounds. Logs in $OUT (tools/gpu-ab.sh).
set -uo pipefail
DMOE_AB_ROUNDS=2 DMOE_AB_LIMIT=100 \
DMOE_AB_ROUTING='T=64K E=64 K=1;T=256K E=64 K=1;T=16K E=256 K=8' \
DMOE_AB_PRESETS=mb-46m,mb-356m,fine-grained \
  tools/gpu-ab.sh build-packs/main.tar.xz build-packs/r6.tar.xz build-packs/r6.tar.xz@DMOE_PDL=0

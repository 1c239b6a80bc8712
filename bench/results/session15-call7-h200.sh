#!/usr/bin/env bash
# Session 15, device call 7: a second layer A/B of the ScatterGrad change (two rounds, mb-46m and mb-356m).
DMOE_AB_ROUNDS=2 DMOE_AB_PRESETS=mb-46m,mb-356m DMOE_AB_LOGS="$OUT/ab" timeout 200 tools/gpu-ab.sh build-packs/s15k.tar.xz build-packs/s15g.tar.xz | grep -v '^{'

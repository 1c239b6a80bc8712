#!/usr/bin/env bash
# Copies a build's executables (tests, benchmarks, the CLI; libdmoe is linked in statically) into a
# small folder with the same layout, to carry to a GPU machine without the object files.
# Usage: tools/pack-run.sh [BUILD_DIR] [DEST]
# DMOE_PACK_TESTS: a regex of the test programs to copy (default all), e.g. 'sm90|layer_test': two such
# builds (the CLI, the benchmarks and a few tests, ~20 MB each) fit one device call's 64 MiB carry, so a
# change can be measured against its base in one call.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
dest="${2:-build-run}"
rm -rf "$dest"
mkdir -p "$dest/tests" "$dest/bench" "$dest/tools"
for t in "$build"/tests/*_test; do
  [[ -n "${DMOE_PACK_TESTS:-}" && ! "$(basename "$t")" =~ $DMOE_PACK_TESTS ]] && continue
  cp "$t" "$dest/tests/"
done
for b in "$build"/bench/*_bench; do [ -x "$b" ] && cp "$b" "$dest/bench/"; done
cp "$build/tools/dmoe" "$dest/tools/"
cp -L "$build"/libdmoe.so "$dest/"  # the C ABI test links the shared library ($ORIGIN/..)
du -sh "$dest"

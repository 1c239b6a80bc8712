#!/usr/bin/env bash
# Copies a build's executables (tests, benchmarks, the CLI; libdmoe is linked in statically) into a
# small folder with the same layout, to carry to a GPU machine without the object files.
# Usage: tools/pack-run.sh [BUILD_DIR] [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
dest="${2:-build-run}"
rm -rf "$dest"
mkdir -p "$dest/tests" "$dest/bench" "$dest/tools"
cp "$build"/tests/*_test "$dest/tests/"
for b in "$build"/bench/*_bench; do [ -x "$b" ] && cp "$b" "$dest/bench/"; done
cp "$build/tools/dmoe" "$dest/tools/"
cp -L "$build"/libdmoe.so "$dest/"  # the C ABI test links the shared library ($ORIGIN/..)
du -sh "$dest"

#!/usr/bin/env bash
# Copies a build's executables (tests, benchmarks, the CLI; libdmoe is linked in statically) into a
# small folder with the same layout, to carry to a GPU machine without the object files. A DEST ending in
# .tar.xz is an archive of that folder instead (~4 MB against ~21 MB: a dozen builds fit one device
# call's 64 MiB carry; tools/gpu-ab.sh unpacks them).
# Usage: tools/pack-run.sh [BUILD_DIR] [DEST]
# DMOE_PACK_TESTS: a regex of the test programs to copy (default all), e.g. 'sm90|layer_test'.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
dest="${2:-build-run}"
folder="$dest"
if [[ "$dest" == *.tar.xz ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  folder="$tmp/$(basename "$dest" .tar.xz)"
  mkdir -p "$(dirname "$dest")"
fi
rm -rf "$folder"
mkdir -p "$folder/tests" "$folder/bench" "$folder/tools"
for t in "$build"/tests/*_test; do
  [[ -n "${DMOE_PACK_TESTS:-}" && ! "$(basename "$t")" =~ $DMOE_PACK_TESTS ]] && continue
  cp "$t" "$folder/tests/"
done
for b in "$build"/bench/*_bench; do [ -x "$b" ] && cp "$b" "$folder/bench/"; done
cp "$build/tools/dmoe" "$folder/tools/"
cp -L "$build"/libdmoe.so "$folder/"  # the C ABI test links the shared library ($ORIGIN/..)
[[ "$dest" == *.tar.xz ]] && tar -C "$(dirname "$folder")" -cJf "$dest" "$(basename "$folder")"
du -sh "$dest"

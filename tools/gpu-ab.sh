#!/usr/bin/env bash
# One device call that measures changes against their base. Each build is a folder or a .tar.xz archive
# made by tools/pack-run.sh (an archive is ~4 MB against ~21 MB for the folder, so a dozen builds fit one
# call's 64 MiB carry). Benchmarks run first, one build after the other with its own kernel cache (base
# first, so no build runs on a GPU warmed by another's tests), then each change's tests. Every step has its
# own time limit. Logs go to LOG_DIR ($OUT, else /tmp/dmoe-ab): products.txt, layer.txt and tests.txt,
# each holding every build's output under "##### LABEL" headers (the device tool returns only 8 files).
# A label is the build's name without .tar.xz.
# Usage: tools/gpu-ab.sh BASE CHANGE [CHANGE...]
#   A build may carry environment settings: PATH@VAR=VALUE[,VAR=VALUE...] runs that build's steps with them
#   (label e.g. routing@DMOE_PDL=0), so one archive can be measured with a runtime switch on and off.
#   DMOE_AB_PRODUCTS  product_bench filters, ';'-separated (each one a run; empty: none)
#   DMOE_AB_ROUNDS    product rounds (default 1): each round runs every build's filters, builds
#                     alternating, and the side-by-side table shows each product's mean over the rounds
#                     (at the H200's power cap one large-shape run moves by up to ~8 %: alternate twice)
#   DMOE_AB_PRESETS   dmoe bench --layer presets, comma-separated (empty: none), run every round (with
#                     --check in round 1); the table shows each preset's means over the rounds
#   DMOE_AB_ROUTING   routing_bench filters, ';'-separated, run every round after the products (empty: none);
#                     the table shows each kernel's µs per build (means over the rounds)
#   DMOE_AB_TESTS     each change's tests: "program[:doctest -tc filter]" entries, ';'-separated
#   DMOE_AB_LIMIT     seconds per benchmark step (default 120)
#   DMOE_AB_TEST_LIMIT  seconds per test step (default 300: the sm90 ping-pong case alone needs more than
#                     120 s on the H200). The device tool ends a whole call at 600 s: budget the steps.
#   DMOE_AB_LOGS      the log folder (default $OUT, else /tmp/dmoe-ab)
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: tools/gpu-ab.sh BASE CHANGE [CHANGE...]" >&2; exit 2; }
logs="${DMOE_AB_LOGS:-${OUT:-/tmp/dmoe-ab}}"
limit="${DMOE_AB_LIMIT:-120}" test_limit="${DMOE_AB_TEST_LIMIT:-300}"
mkdir -p "$logs"
scratch="$(mktemp -d)"  # unpacked builds and what need not come back
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader || true

labels=() dirs=() envs=()
for arg in "$@"; do
  b="${arg%%@*}" env_spec=""
  [[ "$arg" == *@* ]] && env_spec="${arg#*@}"
  name="$(basename "$b" .tar.xz)"
  label="$name${env_spec:+@$env_spec}"
  for l in "${labels[@]}"; do [ "$l" = "$label" ] && { echo "gpu-ab: two builds named $label" >&2; exit 2; }; done
  if [[ "$b" == *.tar.xz ]]; then
    if [ ! -d "$scratch/$name" ]; then  # one archive may serve several labels
      mkdir -p "$scratch/$name" && tar -C "$scratch/$name" -xJf "$b" || { echo "gpu-ab: cannot unpack $b" >&2; exit 2; }
    fi
    dir="$scratch/$name/$(ls "$scratch/$name")"
  else
    dir="$b"
  fi
  labels+=("$label") dirs+=("$dir") envs+=("${env_spec//,/ }")
done

IFS=';' read -ra filters <<< "${DMOE_AB_PRODUCTS:-}"
IFS=';' read -ra routing <<< "${DMOE_AB_ROUTING:-}"
rounds="${DMOE_AB_ROUNDS:-1}"
caches=()
for i in "${!labels[@]}"; do caches+=("$(mktemp -d)/cache"); done  # each build its own kernel cache
# One benchmark run of build i in round r: KIND (products|routing) is the log's name, PROGRAM in the build's
# bench/; the output is left in $scratch/out.txt.
run_bench() {  # kind program filter
  echo "##### $label $1 '$3' (round $r)" >> "$logs/$1.txt"
  env ${envs[$i]} timeout "$limit" "$dir/bench/$2" --json --filter "$3" > "$scratch/out.txt" 2>&1
  local rc=$?
  cat "$scratch/out.txt" >> "$logs/$1.txt"
  echo "== $label $1 '$3' round $r: exit $rc"
}
for ((r = 1; r <= rounds; r++)); do
  for i in "${!labels[@]}"; do
    label="${labels[$i]}" dir="${dirs[$i]}"
    export DMOE_CACHE_DIR="${caches[$i]}"
    for f in "${filters[@]}"; do
      [ -z "$f" ] && continue
      run_bench products product_bench "$f"
      cat "$scratch/out.txt" >> "$scratch/products-$label-$r.txt"
    done
    for f in "${routing[@]}"; do
      [ -z "$f" ] && continue
      run_bench routing routing_bench "$f"
      grep '^{"problem"' "$scratch/out.txt" >> "$scratch/routing-$label.jsonl"
    done
    if [ -n "${DMOE_AB_PRESETS:-}" ]; then  # the layer every round too (checked against fp64 in round 1)
      check=() && [ "$r" -eq 1 ] && check=(--check)
      env ${envs[$i]} timeout "$limit" "$dir/tools/dmoe" bench --layer "${check[@]}" --json \
        --presets "$DMOE_AB_PRESETS" > "$scratch/out.txt" 2>&1
      rc=$?
      { echo "##### $label layer round $r (exit $rc)"; cat "$scratch/out.txt"; } >> "$logs/layer.txt"
      grep '^{"device"' "$scratch/out.txt" >> "$scratch/layer-$label.jsonl"
      echo "== $label layer round $r: exit $rc"
    fi
  done
done

IFS=';' read -ra tests <<< "${DMOE_AB_TESTS:-}"
for i in "${!labels[@]}"; do
  [ "$i" -eq 0 ] && continue  # the base's tests ran when it landed
  label="${labels[$i]}" dir="${dirs[$i]}"
  export DMOE_CACHE_DIR="$(mktemp -d)/cache" DMOE_EXE="$dir/tools/dmoe"
  case "$DMOE_EXE" in /*) ;; *) DMOE_EXE="$PWD/$DMOE_EXE" ;; esac
  for t in "${tests[@]}"; do
    [ -z "$t" ] && continue
    prog="${t%%:*}" tc="" args=()
    [[ "$t" == *:* ]] && tc="${t#*:}" && args=("-tc=$tc")  # a filter may hold spaces: one argument
    env ${envs[$i]} timeout "$test_limit" "$dir/tests/$prog" "${args[@]}" --duration=true > "$scratch/test.txt" 2>&1
    rc=$?
    { echo "##### $label $prog${tc:+ ($tc)} (exit $rc)"; cat "$scratch/test.txt"; } >> "$logs/tests.txt"
    echo "== $label test $prog${tc:+ ($tc)}: exit $rc $(grep -E '^\[doctest\] test cases|checks,' "$scratch/test.txt" | tail -1)"
    [ $rc -ne 0 ] && grep -E 'ERROR|values:' "$scratch/test.txt" | head -20
  done
done

# Side by side: each product's time (ms) and SOL per build (means over the rounds), each change's time
# against the base's.
rows() {
  local files=() r
  for ((r = 1; r <= rounds; r++)); do
    [ -f "$scratch/products-$1-$r.txt" ] || return
    grep -E '^  [01D]' "$scratch/products-$1-$r.txt" | awk '{print $1, $2, $4}' > "$scratch/rows-$1-$r"
    files+=("$scratch/rows-$1-$r")
  done
  paste -d' ' "${files[@]}" | awk -v n="$rounds" '{ms = 0; sol = 0; for (i = 0; i < n; ++i) {ms += $(3 * i + 2); sol += $(3 * i + 3)}
    printf "%s %.3f %.2f\n", $1, ms / n, sol / n}'
}
if [ -f "$scratch/products-${labels[0]}-1.txt" ]; then
  rows "${labels[0]}" > "$scratch/side"
  header="product base(${labels[0]})"
  for i in "${!labels[@]}"; do
    [ "$i" -eq 0 ] && continue
    [ -f "$scratch/products-${labels[$i]}-1.txt" ] || continue
    rows "${labels[$i]}" | awk '{print $2, $3}' | paste -d' ' "$scratch/side" - > "$scratch/side2"
    mv "$scratch/side2" "$scratch/side"
    header="$header | ${labels[$i]}"
  done
  echo "$header (means of $rounds round(s))"
  awk '{printf "%-28s %8s %5s", $1, $2, $3; for (i = 4; i + 1 <= NF; i += 2) printf " | %8s %5s %+6.1f%%", $i, $(i + 1), ($i / $2 - 1) * 100; print ""}' "$scratch/side"
fi
# Routing: each build's mean µs per kernel and problem over the rounds (JSON fields *_us).
for label in "${labels[@]}"; do
  [ -f "$scratch/routing-$label.jsonl" ] || continue
  echo "-- routing $label (µs, means of the rounds)"
  awk '{
    match($0, /"problem": "[^"]*"/); p = substr($0, RSTART + 12, RLENGTH - 13)
    if (!(p in seen)) { seen[p] = 1; order[++np] = p }
    n[p]++
    s = $0
    while (match(s, /"[a-z_]+_us": [0-9.]+/)) {
      kv = substr(s, RSTART + 1, RLENGTH - 1); split(kv, f, "\": ")
      k = f[1]; if (!(k in kseen)) { kseen[k] = 1; keys[++nk] = k }
      sum[p, k] += f[2]; s = substr(s, RSTART + RLENGTH)
    }
  } END {
    printf "%-22s", "problem"; for (j = 1; j <= nk; ++j) printf " %12s", keys[j]; print ""
    for (i = 1; i <= np; ++i) { p = order[i]; printf "%-22s", p
      for (j = 1; j <= nk; ++j) printf " %12.2f", sum[p, keys[j]] / n[p]; print "" }
  }' "$scratch/routing-$label.jsonl"
done
# Layer: each build's means over the rounds per preset (JSON fields), then each change against the base;
# every run's own lines (phases, the check) are in layer.txt.
for label in "${labels[@]}"; do
  [ -f "$scratch/layer-$label.jsonl" ] || continue
  awk -v b="$label" '{
    match($0, /"label": "[^"]*"/); p = substr($0, RSTART + 10, RLENGTH - 11)
    if (!(p in n)) order[++np] = p
    n[p]++
    for (k = 1; k <= 4; ++k) {
      key = (k == 1 ? "fwd_ms" : k == 2 ? "bwd_ms" : k == 3 ? "routing_share" : "step_sol")
      if (match($0, "\"" key "\": [0-9.e+-]+")) { split(substr($0, RSTART, RLENGTH), f, ": "); v[p, k] += f[2] }
    }
  } END { for (i = 1; i <= np; ++i) { p = order[i]
      printf "%s %s %d %.4f %.4f %.4f %.4f\n", b, p, n[p], v[p, 1] / n[p], v[p, 2] / n[p], v[p, 3] / n[p], v[p, 4] / n[p] } }' \
    "$scratch/layer-$label.jsonl" >> "$scratch/layer-means"
done
if [ -f "$scratch/layer-means" ]; then
  echo "-- layer, means of the rounds (step = fwd + bwd; vs: step against ${labels[0]}'s)"
  awk -v base="${labels[0]}" '{ k = $2; if ($1 == base) bstep[k] = $4 + $5; line[NR] = $0 }
    END { printf "%-24s %-14s %6s %9s %9s %9s %8s %8s %7s\n", "build", "preset", "rounds", "fwd ms", "bwd ms", "step ms",
            "routing", "stepSOL", "vs"
      for (i = 1; i <= NR; ++i) { split(line[i], f, " "); st = f[4] + f[5]
        printf "%-24s %-14s %6d %9.3f %9.3f %9.3f %7.1f%% %8.2f %+6.1f%%\n", f[1], f[2], f[3], f[4], f[5], st, 100 * f[6],
          f[7], (f[2] in bstep) ? (st / bstep[f[2]] - 1) * 100 : 0 } }' "$scratch/layer-means"
fi
exit 0

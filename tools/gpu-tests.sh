#!/usr/bin/env bash
# Runs a carried build's doctest programs and the JIT benchmark on a GPU machine that has the NVIDIA
# driver and CUDA toolkit but no Meson build tree of its own (paths differ from the build machine).
# Usage: tools/gpu-tests.sh [BUILD_DIR] [LOG_DIR]
#   DMOE_TEST_FILTER   a regex of program names to run, e.g. 'sm90|layer'
#   DMOE_TEST_TIMEOUT  seconds per program (per test case with DMOE_TEST_JOBS > 1; default 400)
#   DMOE_TEST_JOBS     > 1: every doctest program is split into its test cases (doctest --first/--last),
#                      run as that many processes at once on the one GPU, each with its own kernel cache
#                      and scratch folder. The suites spend most of their time on the CPU (NVRTC, the fp64
#                      references), so on a 16-core machine this is what makes the whole sm90 suite fit
#                      one device call. Default 1: one program after the other, as before.
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
logs="${2:-${OUT:-/tmp}/dmoe-gpu-logs}"
jobs="${DMOE_TEST_JOBS:-1}"
limit="${DMOE_TEST_TIMEOUT:-400}"
mkdir -p "$logs"
# Per-job logs go to a scratch folder and are appended to one combined log as each job ends, so a run
# cut short still brings its logs back (the device tool returns only a few files).
work="$(mktemp -d)"
: > "$logs/all-tests.txt"
export DMOE_EXE="$build/tools/dmoe"
case "$DMOE_EXE" in /*) ;; *) DMOE_EXE="$PWD/$DMOE_EXE" ;; esac  # BUILD_DIR may be absolute
export DMOE_TEST_TMP="$(mktemp -d)"
export DMOE_CACHE_DIR="$DMOE_TEST_TMP/cache"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader || true

programs=()
for t in "$build"/tests/*_test; do
  name=$(basename "$t")
  [[ -n "${DMOE_TEST_FILTER:-}" && ! "$name" =~ $DMOE_TEST_FILTER ]] && continue
  programs+=("$t")
done

# One job: a program, or one test case of it (1-based index among its cases). Writes LOG and LOG.rc, and
# appends LOG to the combined log as soon as it ends (under a lock: jobs end concurrently).
run_job() {  # program index(0: whole program) log
  local t=$1 i=$2 log=$3 args=(--duration=true) rc
  [ "$i" -gt 0 ] && args+=(--first="$i" --last="$i")
  if [ "$jobs" -gt 1 ]; then  # own cache and scratch: tests that count their cache's compiles stay exact
    local own; own="$(mktemp -d)"
    DMOE_TEST_TMP="$own" DMOE_CACHE_DIR="$own/cache" timeout "$limit" "$t" "${args[@]}" > "$log" 2>&1
    rc=$?
    rm -rf "$own"
  else
    timeout "$limit" "$t" "${args[@]}" > "$log" 2>&1
    rc=$?
  fi
  echo $rc > "$log.rc"
  { echo "===== $(basename "$t") job $i (exit $rc)"; cat "$log"; } | flock "$logs/.lock" tee -a "$logs/all-tests.txt" > /dev/null
}

# The jobs: whole programs, or (DMOE_TEST_JOBS > 1) each doctest program's test cases.
: > "$work/jobs"
for t in "${programs[@]}"; do
  name=$(basename "$t") n=0
  if [ "$jobs" -gt 1 ] && grep -q "unskipped test cases passing" "$t"; then  # a doctest program
    n=$("$t" --count 2>/dev/null | sed -n 's/.*passing the current filters: \([0-9]*\).*/\1/p')
    n=${n:-0}  # no count (the GPU-less SKIP): the whole program, which reports the skip
  fi
  if [ "$n" -gt 0 ]; then
    for ((i = 1; i <= n; i++)); do echo "$t $i $work/$name.$i.log" >> "$work/jobs"; done
  else
    echo "$t 0 $work/$name.0.log" >> "$work/jobs"
  fi
done
if [ "$jobs" -gt 1 ]; then
  export -f run_job
  export jobs limit logs
  xargs -P "$jobs" -L 1 bash -c 'run_job "$@"' _ < "$work/jobs"
else
  while read -r t i log; do run_job "$t" "$i" "$log"; done < "$work/jobs"
fi

# Each program passes if every one of its jobs did (the combined log already holds their output).
passed=0; failed=0; skipped=0
for t in "${programs[@]}"; do
  name=$(basename "$t") rc=0 cases=0 asserts=0 bad=() last=""
  while read -r _ i log; do
    last="$log"
    r=$(cat "$log.rc" 2>/dev/null || echo 125)
    a=$(sed -n 's/^\[doctest\] assertions: *\([0-9]*\).*/\1/p' "$log")
    asserts=$((asserts + ${a:-0})) cases=$((cases + 1))
    if [ "$r" -ne 0 ]; then bad+=("$i:$r"); [ "$rc" -eq 0 ] && rc=$r; fi
  done < <(awk -v p="$t" '$1 == p' "$work/jobs")
  case $rc in
    0) passed=$((passed + 1))
       if [ "$cases" -gt 1 ]; then echo "PASS $name: $cases test cases as jobs, $asserts assertions"
       else echo "PASS $name: $(grep -E '^\[doctest\] test cases' "$last" || tail -1 "$last")"; fi;;
    77) skipped=$((skipped + 1)); echo "SKIP $name: $(head -1 "$last")";;
    *) failed=$((failed + 1)) legend=""
       for b in "${bad[@]}"; do [ "${b##*:}" = 124 ] && legend="; 124 = timed out after $limit s"; done
       echo "FAIL $name (job:exit ${bad[*]}$legend)"
       for b in "${bad[@]}"; do tail -40 "$work/$name.${b%%:*}.log"; done;;
  esac
done
[ -z "${DMOE_TEST_FILTER:-}" ] && "$build"/bench/jit_bench --json 2>&1 | tee "$logs/jit_bench.txt"
rm -rf "$work"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]

#!/usr/bin/env bash
# Where one kernel's warps stall, per SASS instruction: profiles the first matching launch after the
# first (the warm-up) with Nsight Compute, clocks left alone, and writes to LOG_DIR
#   ncu.txt      the run's output and the SpeedOfLight / WarpStateStats / SourceCounters sections
#   source.txt   the instructions with the most stall samples (of all samples), with their SASS
#   source.csv.gz  every instruction's counters (ncu --page source --csv --print-source sass)
# Usage: tools/ncu-source.sh KERNEL_REGEX LOG_DIR COMMAND...
# e.g.   tools/ncu-source.sh 'pp_gelu_sm90a' "$OUT" build-run/bench/product_bench --filter 'T=65536 H=512' --reps 2
set -uo pipefail
regex="${1:?kernel name regex}" logs="${2:?log dir}"
shift 2
mkdir -p "$logs"
scratch="$(mktemp -d)"
export DMOE_CACHE_DIR="${DMOE_CACHE_DIR:-$scratch/cache}"
ncu --clock-control none --kernel-name "regex:$regex" --launch-skip 1 --launch-count 1 \
  --section SpeedOfLight --section WarpStateStats --section SourceCounters \
  -o "$scratch/report" "$@" > "$logs/ncu.txt" 2>&1
echo "== ncu exit $?"
ncu --import "$scratch/report.ncu-rep" --page details >> "$logs/ncu.txt" 2>&1
ncu --import "$scratch/report.ncu-rep" --page source --csv --print-source sass > "$scratch/source.csv" 2>&1
echo "== source page exit $? ($(wc -l < "$scratch/source.csv") lines)"
gzip -c "$scratch/source.csv" > "$logs/source.csv.gz"
python3 - "$scratch/source.csv" > "$logs/source.txt" 2>&1 <<'EOF'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
head = next((i for i, r in enumerate(rows) if any('Source' == c.strip() for c in r)), None)
if head is None:
    print('no header with a Source column; first lines:'); [print(','.join(r)) for r in rows[:10]]; sys.exit()
cols = rows[head]
src = cols.index('Source')
def col(name):
    return next((i for i, c in enumerate(cols) if c.startswith(name)), None)
allc, notc, exe = col('Warp Stall Sampling (All'), col('Warp Stall Sampling (Not'), col('Instructions Executed')
def num(r, i):
    try: return float(r[i].replace(',', '')) if i is not None else 0.0
    except (ValueError, IndexError): return 0.0
body = [r for r in rows[head + 1:] if len(r) == len(cols)]
total = sum(num(r, allc) for r in body) or 1.0
print(f'{len(body)} instructions, {total:.0f} stall samples; columns: {cols}')
print(f'{"all %":>6} {"not-issued %":>12} {"executed":>10}  sass')
for r in sorted(body, key=lambda r: -num(r, allc))[:60]:
    print(f'{100 * num(r, allc) / total:6.2f} {100 * num(r, notc) / total:12.2f} {num(r, exe):10.0f}  {r[src]}')
EOF
echo "== summary: $(head -1 "$logs/source.txt" | cut -c1-200)"

#!/usr/bin/env python3
"""Which product-benchmark rows miss issue 4's targets, by how much, and what kind of gap it is.

Reads the JSON lines of `product_bench --json` / `dmoe bench --products --json` (other lines are skipped)
and prints, per product row: time, SOL fraction, whether the speed-of-light time is set by FLOPs
(compute-bound) or by bytes, the ratio to cuBLAS's same-FLOP dense product, the routing's padding, and
for each row below a target the kinds of gap that apply:
  padding      the kernel reaches the SOL target on the FLOPs it executes (useful x padded/T.K rows):
               the rest is the block format's padding at this block size
  cublas-too   cuBLAS's dense product of the same useful FLOPs misses the SOL target as well
  epilogue     a fused activation (forward) or activation-gradient epilogue row
  kernel       none of the above
Targets (issue 4): SOL >= 0.85 on every row, >= 0.95x the cuBLAS same-FLOP product on compute-bound rows.
A row below the cuBLAS target whose padding alone caps it there says so: computing the padded rows at
cuBLAS's per-FLOP rate reads at most 1 / (padded / T.K rows) of cuBLAS's time on the useful ones.
The cuBLAS ratio is the paired one (paired_vs_dense: dmoe and cuBLAS in alternating batches, the same power
state) where the results have it, else the single-pass vs_dense; the column "single" shows the latter.
Usage: tools/product-gaps.py RESULTS [--sol 0.85] [--cublas 0.95] [--all]
"""
import argparse
import json
import sys


def rows(path):
    header, out = None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith('{'):
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue
            if j.get('type') == 'header':
                header = j
            elif j.get('type') == 'product':
                out.append(j)
    return header, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('results')
    ap.add_argument('--sol', type=float, default=0.85, help='SOL target (default 0.85)')
    ap.add_argument('--cublas', type=float, default=0.95, help='target ratio to cuBLAS dense (default 0.95)')
    ap.add_argument('--all', action='store_true', help='print the rows that meet the targets too')
    a = ap.parse_args()
    header, prods = rows(a.results)
    if header is None or not prods:
        sys.exit(f'product-gaps: no header and product JSON lines in {a.results}')
    gemm, copy = header['gemm_ceiling_tflops'] * 1e12, header['copy_ceiling_tbs'] * 1e12
    print(f"{header['gpu']}, dmoe {header['dmoe_commit']}, ceilings {header['gemm_ceiling_tflops']:.0f} TFLOP/s "
          f"and {header['copy_ceiling_tbs']:.2f} TB/s; targets SOL >= {a.sol}, >= {a.cublas}x cuBLAS (compute-bound)")
    print(f"{'problem':<42} {'product':<24} {'ms':>7} {'SOL':>5} {'bound':>7} {'vs cuBLAS':>9} {'single':>6} {'pad':>6}  gap")
    kinds, missed_sol, missed_cublas, capped = {}, 0, 0, 0
    for p in prods:
        flops_ms = p['useful_flops'] / gemm * 1e3
        bytes_ms = p['min_bytes'] / copy * 1e3
        bound = 'compute' if flops_ms >= bytes_ms else 'memory'
        pad = p['padded_rows'] / (p['tokens'] * p['top_k'])
        single = p.get('vs_dense')
        vs = p.get('paired_vs_dense', single)
        sol_ok = p['sol_fraction'] >= a.sol
        cublas_ok = bound != 'compute' or vs is None or vs >= a.cublas
        tags = []
        if not sol_ok:
            missed_sol += 1
            if p['sol_fraction'] * pad >= a.sol:
                tags.append('padding')
            if vs is not None and p['sol_ms'] / p['dense_ms'] < a.sol:
                tags.append('cublas-too')
            if '+' in p['product']:
                tags.append('epilogue')
            if not tags:
                tags.append('kernel')
            for t in tags:
                kinds[t] = kinds.get(t, 0) + 1
        if not cublas_ok:
            missed_cublas += 1
            tags.append(f'below {a.cublas}x cuBLAS')
            if 1 / pad < a.cublas:
                capped += 1
                tags.append(f'(padding caps it at {1 / pad:.2f}x)')
        gap = ' '.join(tags)
        if gap or a.all:
            problem = p['problem'][:-len(p['product'])].strip()
            vs_text = f'{vs:.2f}' if vs is not None else '-'
            single_text = f'{single:.2f}' if single is not None else '-'
            print(f"{problem:<42} {p['product']:<24} {p['dmoe_ms']:7.3f} {p['sol_fraction']:5.2f} {bound:>7} "
                  f"{vs_text:>9} {single_text:>6} {100 * (pad - 1):5.1f}%  {gap}")
    print(f"{len(prods)} rows: {missed_sol} below SOL {a.sol} (gap kinds, a row may have several: "
          + ', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) + f"), {missed_cublas} compute-bound rows below "
          f"{a.cublas}x cuBLAS ({capped} capped there by their padding)")


if __name__ == '__main__':
    main()

// dmoe/kernels/topology.cuh — the MoE block-sparse topology in closed form from padded_bins
// (dmoe-semantics.md, "Block-sparse topology"; reference::topology_from_counts on the host).
//
// Work mapping (runtime/routing.cpp's routing_grid matches): 256 threads per CTA, one thread per index
// g = blockIdx.x·256 + threadIdx.x over max(max_blocks, E·FB + 1, max_block_rows + 1), FB = F/B,
// max_block_rows = max_rows / B, max_blocks = max_block_rows·FB. Thread g writes
//   g < block_rows·FB:     row_indices, column_indices, column_indices_t, block_offsets_t at g
//   g ≤ max_block_rows:    offsets[g] (rows past the true block_rows are empty: offsets stay at blocks)
//   g ≤ E·FB:              offsets_t[g]
// Expert e owns block rows [rs_e, rs_e + rows_e), rs_e = padded_bins[e−1]/B, and the same range of
// positions [rs_e·FB, (rs_e + rows_e)·FB) in both block orders: row-major in the forward order, column-
// major (column e·FB + jj holds the expert's rows in order) in the transposed order.
#pragma once
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/routing_args.cuh"

namespace dmoe {

template <int E, int B, int F>
__device__ __forceinline__ void topology_kernel(const RoutingArgs& a) {
  static_assert(F % B == 0, "ffn must be a multiple of the block");
  constexpr int FB = F / B;
  constexpr int kThreads = 256;
  __shared__ int32_t row_end[E];  // padded_bins[e] / B: one past expert e's last block row
#pragma unroll 1
  for (int e = threadIdx.x; e < E; e += kThreads) row_end[e] = ptx::ld_nc_s32(a.s.padded_bins + e) / B;
  __syncthreads();

  const int64_t g = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int32_t max_block_rows = a.max_rows / B;
  int32_t block_rows = ptx::ld_nc_s32(a.s.block_rows);
  if (block_rows > max_block_rows) block_rows = max_block_rows;  // never write past the capacity
  if (block_rows < 0) block_rows = 0;
  const TopologyOut& o = a.topo;

  if (g < int64_t(block_rows) * FB) {
    const int32_t p = int32_t(g);
    const int32_t r = p / FB, j = p % FB;
    // The expert of block row r: the first e with row_end[e] > r. It also owns position p in the
    // transposed order, since row_end[e]·FB > p ⟺ row_end[e] > p / FB.
    int lo = 0, hi = E - 1;
#pragma unroll 1
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (row_end[mid] > r)
        hi = mid;
      else
        lo = mid + 1;
    }
    const int e = lo;
    o.row_indices[p] = r;
    o.column_indices[p] = e * FB + j;
    const int32_t rs = e ? row_end[e - 1] : 0;
    const int32_t rows = row_end[e] - rs;  // > 0: the expert owns block row r
    const int32_t q = p - rs * FB;
    const int32_t jj = q / rows, ii = q - jj * rows;
    o.column_indices_t[p] = rs + ii;
    o.block_offsets_t[p] = (rs + ii) * FB + jj;
  }
  if (g <= max_block_rows) o.offsets[g] = (g < block_rows ? int32_t(g) : block_rows) * FB;
  if (g <= int64_t(E) * FB) {
    int32_t v;
    if (g == int64_t(E) * FB) {
      v = block_rows * FB;
    } else {
      const int e = int(g) / FB, jj = int(g) % FB;
      const int32_t rs = e ? row_end[e - 1] : 0;
      v = rs * FB + jj * (row_end[e] - rs);  // an empty expert's columns all start where its range does
    }
    o.offsets_t[g] = v;
  }
}

}  // namespace dmoe

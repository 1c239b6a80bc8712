// dmoe/kernels/permute.cuh — the permutation of the assignments by expert, the padded gather, the padded
// scatter and the scatter's backward (dmoe-semantics.md, "Permutation"). Work mapping, which
// runtime/routing.cpp's routing_grid matches:
//   permute_kernel       one warp per chunk c of kRouteChunkTokens tokens (assignments [c·256·K, …))
//   gather_kernel        8 warps per CTA: one warp per token t = blockIdx.x·8 + warp (read once, written to
//                        its K rows), then one CTA per expert zeroing its padding rows
//   scatter_kernel       8 warps per CTA, one warp per token t = blockIdx.x·8 + warp (< T); one source
//                        rows x, or two (x + x2, a.x2 set: the gated experts' dX)
//   scatter_grad_kernel  8 warps per CTA: one warp per assignment i = blockIdx.x·8 + warp (< T·K), then
//                        one CTA per expert zeroing its padding rows (as gather)
// Rows are moved as 16-byte vectors (8 elements; H is a multiple of 64). Every true size (counts, bins,
// padded_bins) is read from device memory; rows past the true T_pad are never touched.
#pragma once
#include "dmoe/common/types.cuh"
#include "dmoe/common/vec8.cuh"
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/routing_args.cuh"

namespace dmoe {
namespace permute_detail {

// Enumerators, not constexpr variables: NVRTC emits a namespace-scope constexpr as a .global symbol.
enum : int { kWarps = 8 };  // warps per CTA of the row- and token-parallel kernels (routing.cpp's kWarpsPerCta)
enum : unsigned { kFull = 0xffffffffu };

// Expert e's padding rows [padded_start + count, padded_end), fewer than B, capped at the capacity: one
// CTA's warps write them as zeros (each a row at a time); with row_tokens set its entries become −1 first.
// y null: only the map.
template <class Elem, int H, int E>
__device__ __forceinline__ void zero_padding_rows(const RoutingArgs& a, int e, Elem* y, int32_t* row_tokens) {
  if (e >= E) return;
  const int32_t padded_start = e ? ptx::ld_nc_s32(a.s.padded_bins + e - 1) : 0;
  const int32_t first = padded_start + ptx::ld_nc_s32(a.s.counts + e);
  const int32_t last = min(ptx::ld_nc_s32(a.s.padded_bins + e), a.max_rows);
  if (row_tokens)
    for (int32_t r = first + int32_t(threadIdx.x); r < last; r += int32_t(blockDim.x)) row_tokens[r] = -1;
  if (!y) return;
  const int lane = threadIdx.x & 31;
  const Vec8 zero{{0u, 0u, 0u, 0u}};
#pragma unroll 1
  for (int32_t r = first + (threadIdx.x >> 5); r < last; r += kWarps) {
    Vec8* dst = reinterpret_cast<Vec8*>(y + int64_t(r) * H);
#pragma unroll 1
    for (int v = lane; v < H / 8; v += 32) st_v4(dst + v, zero);
  }
}

}  // namespace permute_detail

// Stable ranking of chunk c's assignments by expert. The chunk's first assignment of expert e has rank
// chunk_offsets[c·E + e] (exclusive prefix over chunks, from Bins) among that expert's assignments; inside
// the chunk the warp walks 32 assignments at a time in order and ranks equal experts by lane.
template <int E, int K>
__device__ __forceinline__ void permute_kernel(const RoutingArgs& a) {
  using namespace permute_detail;
  constexpr int kChunk = kRouteChunkTokens * K;
  constexpr int U = 4;  // 32-assignment groups whose expert ids are loaded together
  __shared__ int32_t sorted_next[E];  // next sorted position of expert e: bins_start_e + rank
  __shared__ int32_t pad_delta[E];    // padded_start_e − bins_start_e: sorted position → padded row
  const RoutingState& s = a.s;
  const int lane = threadIdx.x & 31;
  const int64_t c = blockIdx.x;
  const int64_t begin = c * kChunk;
  const int64_t total = int64_t(a.tokens) * K;
  if (begin >= total) return;
  const int n = int(total - begin < kChunk ? total - begin : kChunk);

#pragma unroll 1
  for (int e = lane; e < E; e += 32) {
    const int32_t bins_start = e ? ptx::ld_nc_s32(s.bins + e - 1) : 0;
    const int32_t padded_start = e ? ptx::ld_nc_s32(s.padded_bins + e - 1) : 0;
    sorted_next[e] = bins_start + ptx::ld_nc_s32(s.chunk_offsets + c * E + e);
    pad_delta[e] = padded_start - bins_start;
  }
  __syncwarp();

  const unsigned below = (1u << lane) - 1u;
  const int* ids = s.expert_ids + begin;
#pragma unroll 1
  for (int i0 = 0; i0 < n; i0 += 32 * U) {
    int ev[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int off = i0 + u * 32 + lane;
      ev[u] = off < n ? ptx::ld_nc_s32(ids + off) : -1;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int off = i0 + u * 32 + lane;
      const int e = (ev[u] >= 0 && ev[u] < E) ? ev[u] : -1;  // past the chunk (or a bad id): no output
      const unsigned peers = __match_any_sync(kFull, e);
      int32_t p = 0;
      if (e >= 0) p = sorted_next[e] + __popc(peers & below);
      __syncwarp();  // every lane has read sorted_next before the lowest peer advances it
      if (e >= 0) {
        if ((peers & below) == 0) sorted_next[e] += __popc(peers);
        const int32_t i = int32_t(begin + off);
        s.indices[p] = i;
        s.bin_ids[p] = e;
        s.rows[i] = p + pad_delta[e];
        if (s.row_tokens) s.row_tokens[p + pad_delta[e]] = i / K;
      }
      __syncwarp();
    }
  }
}

// y[r] = x[indices[bins_start_e + j] / K] for padded row r = padded_start_e + j, j < count_e; padding rows
// up to the true T_pad are written as zeros, rows past it are left alone. The padding rows' entries of
// s.row_tokens (when set) are written −1. With y null only those are: the rows map of an SDD that
// gathers its operand itself (the token CTAs are not launched).
template <class Elem, int H, int E, int K>
__device__ __forceinline__ void gather_kernel(const RoutingArgs& a) {
  using namespace permute_detail;
  static_assert(H % 8 == 0, "rows move as 16-byte vectors");
  constexpr int V = H / 8;                     // vectors per row
  constexpr int PER_LANE = (V + 31) / 32;      // vectors per lane, at most
  constexpr int U = PER_LANE < 4 ? PER_LANE : 4;  // vectors in flight per lane
  const int lane = threadIdx.x & 31;
  const int64_t token_ctas = a.y ? (int64_t(a.tokens) + kWarps - 1) / kWarps : 0;  // routing_grid's split
  Elem* y = static_cast<Elem*>(a.y);
  if (blockIdx.x < token_ctas) {
    // Token-parallel: each token's row is read once and written to its K padded rows.
    const int64_t t = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (t >= a.tokens) return;
    const Vec8* src = reinterpret_cast<const Vec8*>(static_cast<const Elem*>(a.x) + t * H);
#pragma unroll 1
    for (int m0 = 0; m0 < PER_LANE; m0 += U) {
      Vec8 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if ((m0 + u) * 32 + lane < V) v[u] = ld_nc_v4(src + (m0 + u) * 32 + lane);
#pragma unroll 1
      for (int k = 0; k < K; ++k) {
        Vec8* dst = reinterpret_cast<Vec8*>(y + int64_t(ptx::ld_nc_s32(a.s.rows + t * K + k)) * H);
#pragma unroll
        for (int u = 0; u < U; ++u)
          if ((m0 + u) * 32 + lane < V) st_v4(dst + (m0 + u) * 32 + lane, v[u]);
      }
    }
    return;
  }
  // One CTA per expert zeroes its padding rows.
  zero_padding_rows<Elem, H, E>(a, int(blockIdx.x - token_ctas), y, a.s.row_tokens);
}

namespace permute_detail {

// The scatter of one token's row, with TWO: the second source x2 added to every row it reads. The sources
// are read one after the other (all of x's K rows, then x2's), so the loads in flight and the registers
// they take are those of one source.
template <class Elem, int H, int K, bool TWO>
__device__ __forceinline__ void scatter_token(const RoutingArgs& a, int64_t t) {
  constexpr int V = H / 8;
  constexpr bool kRegs = K <= 8;            // the K rows and weights live in registers
  constexpr int U = K >= 4 ? 1 : K >= 2 ? 2 : 4;  // vectors per lane in flight: U·K loads
  constexpr int N = TWO ? 2 : 1;            // sources
  const int lane = threadIdx.x & 31;
  const bool weighted = a.weighted != 0;
  const Elem* x = static_cast<const Elem*>(a.x);
  const Elem* x2 = static_cast<const Elem*>(a.x2);
  Vec8* dst = reinterpret_cast<Vec8*>(static_cast<Elem*>(a.y) + t * H);
  const int64_t first = t * K;

  if constexpr (kRegs) {
    // Lane k loads assignment k's row and weight; every lane then holds all K in registers.
    const int32_t my_row = lane < K ? ptx::ld_nc_s32(a.s.rows + first + lane) : 0;
    const float my_w = (lane < K && weighted) ? ptx::ld_nc_f32(a.s.weights + first + lane) : 1.f;
    int64_t off[K];  // element offset of row(t, k)
    float w[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      off[k] = int64_t(__shfl_sync(kFull, my_row, k)) * H;
      w[k] = __shfl_sync(kFull, my_w, k);
    }
#pragma unroll 1
    for (int v0 = lane; v0 < V; v0 += 32 * U) {
      float acc[U][8];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[u][j] = 0.f;
#pragma unroll 1
      for (int n = 0; n < N; ++n) {  // a loop, not unrolled: x2's loads wait for x's to be used
        const Elem* src = n == 0 ? x : x2;
        Vec8 in[U][K];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int k = 0; k < K; ++k)
            if (v0 + u * 32 < V) in[u][k] = ld_nc_v4(reinterpret_cast<const Vec8*>(src + off[k]) + v0 + u * 32);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (v0 + u * 32 >= V) break;
#pragma unroll
          for (int k = 0; k < K; ++k) {
            float f[8];
            unpack<Elem>(in[u][k], f);
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[u][j] = fmaf(w[k], f[j], acc[u][j]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (v0 + u * 32 >= V) break;
        st_v4(dst + v0 + u * 32, pack<Elem>(acc[u]));
      }
    }
  } else {
    // Many experts per token: rows and weights are read where they are used (broadcast loads, L1-resident).
    const int32_t* rows = a.s.rows + first;
    const float* weights = a.s.weights + first;
#pragma unroll 1
    for (int v = lane; v < V; v += 32) {
      float acc[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = 0.f;
#pragma unroll 1
      for (int n = 0; n < N; ++n) {
        const Elem* src = n == 0 ? x : x2;
#pragma unroll 4
        for (int k = 0; k < K; ++k) {
          const int64_t row = ptx::ld_nc_s32(rows + k);
          const float wk = weighted ? ptx::ld_nc_f32(weights + k) : 1.f;
          float f[8];
          unpack<Elem>(ld_nc_v4(reinterpret_cast<const Vec8*>(src + row * H) + v), f);
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[j] = fmaf(wk, f[j], acc[j]);
        }
      }
      st_v4(dst + v, pack<Elem>(acc));
    }
  }
}

}  // namespace permute_detail

// y[t] = Σ_k w[t·K + k] · x[rows[t·K + k]] (w = 1 when !a.weighted), accumulated in fp32 and rounded once.
// With a.x2 set, each row is x[r] + x2[r]: acc sums w·x[row(t, k)] over k, then w·x2[row(t, k)] over k.
template <class Elem, int H, int K>
__device__ __forceinline__ void scatter_kernel(const RoutingArgs& a) {
  using namespace permute_detail;
  static_assert(H % 8 == 0, "rows move as 16-byte vectors");
  const int64_t t = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= a.tokens) return;
  if (a.x2)
    scatter_token<Elem, H, K, true>(a, t);
  else
    scatter_token<Elem, H, K, false>(a, t);
}

// The scatter's backward. Assignment-parallel: warp i takes assignment i = t·K + k, its padded row
// r = rows[i]: y[r] = dy[t] · w[i] (rounded once), and dw[i] = ⟨aux[r], dy[t]⟩ in fp32. A CTA's 8 warps
// hold consecutive assignments, so a token's K warps read dy[t] together and DRAM sees it about once (one
// warp per padded row, in expert order, read it K times: 69 % of the copy rate at K = 8 on the H200, at
// the DRAM rate of the bytes it moved). Then one CTA per expert zeroes its padding rows, as the gather.
// dy is a.x [T, H]; aux the forward expert output rows [max_rows, H].
template <class Elem, int H, int E, int K>
__device__ __forceinline__ void scatter_grad_kernel(const RoutingArgs& a) {
  using namespace permute_detail;
  static_assert(H % 8 == 0, "rows move as 16-byte vectors");
  constexpr int V = H / 8;
  constexpr int PER_LANE = (V + 31) / 32;
  constexpr int U = PER_LANE < 2 ? PER_LANE : 2;  // 2·U loads in flight per lane
  const int lane = threadIdx.x & 31;
  const int64_t assignments = int64_t(a.tokens) * K;
  const int64_t assignment_ctas = (assignments + kWarps - 1) / kWarps;  // routing_grid's split
  if (blockIdx.x >= assignment_ctas) {
    zero_padding_rows<Elem, H, E>(a, int(blockIdx.x - assignment_ctas), static_cast<Elem*>(a.y), nullptr);
    return;
  }
  const int64_t i = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (i >= assignments) return;
  const int32_t r = ptx::ld_nc_s32(a.s.rows + i);
  if (r >= a.max_rows) return;  // past the capacity: as the row-parallel form, nothing is written
  const float w = ptx::ld_nc_f32(a.s.weights + i);
  Vec8* dst = reinterpret_cast<Vec8*>(static_cast<Elem*>(a.y) + int64_t(r) * H);
  const Vec8* dy = reinterpret_cast<const Vec8*>(static_cast<const Elem*>(a.x) + (i / K) * H);
  const Vec8* out = reinterpret_cast<const Vec8*>(static_cast<const Elem*>(a.aux) + int64_t(r) * H);
  float dot = 0.f;
#pragma unroll 1
  for (int m0 = 0; m0 < PER_LANE; m0 += U) {
    Vec8 d[U], o[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = (m0 + u) * 32 + lane;
      if (v < V) {
        d[u] = ld_nc_v4(dy + v);
        o[u] = ld_nc_v4(out + v);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = (m0 + u) * 32 + lane;
      if (v >= V) break;
      float fd[8], fo[8];
      unpack<Elem>(d[u], fd);
      unpack<Elem>(o[u], fo);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        dot = fmaf(fo[j], fd[j], dot);
        fd[j] *= w;
      }
      st_v4(dst + v, pack<Elem>(fd));
    }
  }
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) dot += __shfl_xor_sync(kFull, dot, m);
  if (lane == 0) ptx::st_f32(a.dweights + i, dot);
}

}  // namespace dmoe

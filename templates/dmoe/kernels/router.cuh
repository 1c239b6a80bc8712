// dmoe/kernels/router.cuh — the router's kernels: jitter, softmax + top-k, bins (counts, chunk prefixes,
// losses) and the gradient of the logits. Work mapping (routing_grid in runtime/routing.cpp):
//   Jitter      256 threads; thread g of CTA b scales kJitterVectors 16-byte vectors of x [T, H], vectors
//               1024b + g + 256j
//   Router      32·W threads, W = router_warps(E); CTA c is chunk c (tokens [256c, 256c + 256) ∩ [0, T));
//               E ≤ 64: thread j takes token 256c + j (router_per_thread); else warp w takes the tokens
//               256c + (256/W)·w + j, one at a time, lane l holding experts l + 32i (router_per_warp)
//   Bins        one CTA of kMaxRoutingExperts threads, thread e = expert e
//   RouterGrad  fp32 dlogits and/or a copy rounded to the activation dtype (the operand cuBLASLt
//               multiplies); router_grad_per_thread(E, K): 32 threads, thread j takes token 32·blockIdx.x
//               + j (router_grad_thread); else 256 threads, one warp per token t = 8·blockIdx.x + warp
// Float reductions run in a fixed order (registers, shuffles, then shared memory in warp order; no float
// atomics): every result is bitwise reproducible from run to run.
#pragma once
#include "dmoe/common/types.cuh"
#include "dmoe/common/vec8.cuh"
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/routing_args.cuh"

namespace dmoe {
namespace router_detail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLowest = -3.402823466e38f;  // −FLT_MAX: below every finite logit
constexpr int kWarps = 8;                    // Router and RouterGrad CTAs: 256 threads

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;  // the butterfly leaves the same bits in every lane (a + b == b + a)
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(kFullMask, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// One token's softmax over E experts, spread over a warp: lane l holds experts l + 32i in p[i].
template <int E>
struct SoftmaxRow {
  static constexpr int N = (E + 31) / 32;
  float p[N];  // probabilities; 0 past E
  float lse;   // logsumexp of the logits

  // This lane's logits of one token (−FLT_MAX past E), issued apart from their use so a warp can have
  // several tokens' loads in flight.
  __device__ __forceinline__ static void fetch(const float* logits, int lane, float (&raw)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int e = lane + 32 * i;
      raw[i] = e < E ? ptx::ld_nc_f32(logits + e) : kLowest;
    }
  }

  __device__ __forceinline__ void load(const float* logits, int lane) {
    float raw[N];
    fetch(logits, lane, raw);
    set(raw, lane);
  }

  __device__ __forceinline__ void set(const float (&raw)[N], int lane) {
    float m = kLowest;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      p[i] = raw[i];
      m = p[i] > m ? p[i] : m;
    }
    m = warp_max(m);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      p[i] = lane + 32 * i < E ? expf(p[i] - m) : 0.f;
      sum += p[i];
    }
    sum = warp_sum(sum);
    lse = m + logf(sum);
    const float inv = 1.f / sum;  // one division: ptxas calls a slow path for each div.rn
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] *= inv;
  }
};

// Block-wide inclusive scan of one int per thread over THREADS threads; `s` is [THREADS / 32] shared.
template <int THREADS>
__device__ __forceinline__ int block_inclusive_scan(int v, int* s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < THREADS / 32 ? s[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += n;
    }
    if (lane < THREADS / 32) s[lane] = w;
  }
  __syncthreads();
  return warp > 0 ? v + s[warp - 1] : v;
}

// Block-wide sum over THREADS threads in a fixed tree order; the result is valid in thread 0.
template <int THREADS>
__device__ __forceinline__ float block_sum(float v, float* s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) v = warp_sum(lane < THREADS / 32 ? s[lane] : 0.f);
  __syncthreads();
  return v;
}

// A router CTA's partials for Bins: its chunk's histogram, Σ softmax per expert (score(e)) and Σ
// logsumexp² over its W warps (zs, added in index order).
template <int E, int THREADS, int W, class Score>
__device__ __forceinline__ void store_chunk_partials(const RoutingArgs& a, int64_t chunk, const int (&hist)[E],
                                                     const float (&zs)[W], Score score) {
  for (int e = threadIdx.x; e < E; e += THREADS) {
    a.s.chunk_hist[chunk * E + e] = hist[e];
    a.s.chunk_scores[chunk * E + e] = score(e);
  }
  if (threadIdx.x == 0) {
    float zc = 0.f;
#pragma unroll
    for (int w = 0; w < W; ++w) zc += zs[w];
    a.s.chunk_z[chunk] = zc;
  }
}

}  // namespace router_detail

// y = x · U(1 − ε, 1 + ε) (+ aux when set) element-wise, rounded to Elem. x and aux may be y (in place);
// applied to a gradient it is the backward pass (same seed). The key is (seed_hi:seed_lo), or read from
// device memory (jitter_seed), so that a replayed CUDA graph draws new noise each time.
template <class Elem, int H>
__device__ __forceinline__ void jitter_kernel(const RoutingArgs& a) {
  uint32_t seed_lo = a.seed_lo, seed_hi = a.seed_hi;
  if (a.jitter_seed) {
    const uint64_t base = a.jitter_seed[0], offset = a.jitter_seed[1];
    const uint64_t key = jitter_key(base, offset);
    seed_lo = uint32_t(key), seed_hi = uint32_t(key >> 32);
    if (a.jitter_next && blockIdx.x == 0 && threadIdx.x == 0) *a.jitter_next = offset + 1;
  }
  // kJitterVectors 16-byte vectors per thread, 256 threads apart (coalesced), every load issued before
  // the first is used: one vector per thread left the kernel at 69 % of the copy rate (too few bytes in
  // flight per SM for the DRAM latency, and 256-thread CTAs that each lived one load long).
  const int64_t vectors = int64_t(a.tokens) * H / 8;  // H % 64 == 0: the last vector is whole
  const int64_t base = int64_t(blockIdx.x) * (256 * kJitterVectors) + threadIdx.x;
  unsigned v[kJitterVectors][4], r[kJitterVectors][4];
#pragma unroll
  for (int j = 0; j < kJitterVectors; ++j) {
    const int64_t vec = base + 256 * j;
    // r: −0.0 in both halves without aux (bf16 and fp16 alike): adding it leaves every product as it was,
    // +0.0 included.
#pragma unroll
    for (int q = 0; q < 4; ++q) r[j][q] = 0x80008000u;
    if (vec >= vectors) continue;
    ptx::ld_v4_u32(static_cast<const unsigned short*>(a.x) + vec * 8, v[j]);
    if (a.aux) ptx::ld_v4_u32(static_cast<const unsigned short*>(a.aux) + vec * 8, r[j]);
  }
#pragma unroll
  for (int j = 0; j < kJitterVectors; ++j) {
    const int64_t vec = base + 256 * j;
    if (vec >= vectors) break;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint64_t i = uint64_t(vec) * 8 + 2 * q;  // the low half is the lower element
      const float lo = Elem::to_float(v[j][q] & 0xffffu) * jitter_factor(seed_lo, seed_hi, i, a.jitter_eps) +
                       Elem::to_float(r[j][q] & 0xffffu);
      const float hi = Elem::to_float(v[j][q] >> 16) * jitter_factor(seed_lo, seed_hi, i + 1, a.jitter_eps) +
                       Elem::to_float(r[j][q] >> 16);
      v[j][q] = unsigned(Elem::from_float(lo)) | unsigned(Elem::from_float(hi)) << 16;
    }
    ptx::st_v4_u32(static_cast<unsigned short*>(a.y) + vec * 8, v[j]);
  }
}

// Softmax, top-K (ties to the lower expert; k = 0 the best) of the probabilities plus the optional expert
// bias, weights (the selected probabilities, unbiased, renormalized by their P-norm when P is 1 or 2) and
// the chunk's partials: histogram, Σ softmax per expert, Σ logsumexp².
namespace router_detail {

// One token's softmax in one thread's registers (E ≤ kThreadRouterExperts): p = softmax(row), returns
// the logsumexp. E % 4 == 0 rows are 16-byte aligned: E / 4 vector loads, all in flight together.
template <int E>
__device__ __forceinline__ float thread_softmax(const float* row, float (&p)[E]) {
  if constexpr (E % 4 == 0) {
#pragma unroll
    for (int e = 0; e < E; e += 4) {
      unsigned v[4];
      ptx::ld_nc_v4_u32(row + e, v);
#pragma unroll
      for (int q = 0; q < 4; ++q) p[e + q] = __uint_as_float(v[q]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) p[e] = ptx::ld_nc_f32(row + e);
  }
  float m = kLowest;
#pragma unroll
  for (int e = 0; e < E; ++e) m = p[e] > m ? p[e] : m;
  float sum = 0.f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    p[e] = expf(p[e] - m);
    sum += p[e];
  }
  const float inv = 1.f / sum;  // one division: ptxas calls a slow path for each div.rn
#pragma unroll
  for (int e = 0; e < E; ++e) p[e] *= inv;
  return m + logf(sum);
}

// The router for E ≤ kThreadRouterExperts: one thread per token of the chunk (256 threads), its logits in
// registers, softmax and top-k serial. Per token it issues a few dozen warp instructions where a warp per
// token (router_per_warp) issues hundreds (two butterfly reductions plus K more), the bound that made the
// router grow linearly with CTAs per SM at full occupancy. The chunk's Σ softmax per expert: a butterfly
// per expert within each warp, then the warps in index order (fixed order: bitwise reproducible).
template <int E, int K, int P>
__device__ __forceinline__ void router_per_thread(const RoutingArgs& a) {
  static_assert(E <= kThreadRouterExperts, "one thread holds all of a token's logits");
  constexpr int THREADS = kRouteChunkTokens, W = THREADS / 32;
  __shared__ int hist[E];
  __shared__ float bias[E];
  __shared__ float part[W][E];
  __shared__ float zs[W];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunk = blockIdx.x;
  for (int e = threadIdx.x; e < E; e += THREADS) hist[e] = 0, bias[e] = a.expert_bias ? a.expert_bias[e] : 0.f;
  const bool biased = a.expert_bias != nullptr;
  __syncthreads();

  const int64_t t = chunk * kRouteChunkTokens + threadIdx.x;
  const bool live = t < a.tokens;
  float p[E];
  float lse = 0.f;
  if (live) {
    lse = thread_softmax<E>(a.logits + t * E, p);

    // Top-K by (probability + bias) descending, the lower expert first on ties (strict >, ascending e);
    // the weight is the winner's unbiased probability.
    int32_t* ids = a.s.expert_ids + t * K;
    float* weights = a.s.weights + t * K;
    uint64_t picked = 0;
    float norm = 0.f;
    for (int k = 0; k < K; ++k) {
      float best = kLowest, best_p = 0.f;
      int arg = 0;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float key = biased ? p[e] + bias[e] : p[e];
        if (!((picked >> e) & 1u) && key > best) best = key, best_p = p[e], arg = e;
      }
      picked |= uint64_t(1) << arg;
      atomicAdd(&hist[arg], 1);  // integer: order-independent
      ids[k] = arg;
      weights[k] = best_p;
      norm += P == 2 ? best_p * best_p : best_p;
    }
    if constexpr (P != 0) {
      const float inv_norm = 1.f / (P == 1 ? norm : sqrtf(norm));
#pragma unroll 1
      for (int k = 0; k < K; ++k) weights[k] *= inv_norm;  // this thread's own writes: program order
    }
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) p[e] = 0.f;
  }

#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float s = warp_sum(p[e]);
    if (lane == 0) part[warp][e] = s;
  }
  const float z = warp_sum(lse * lse);
  if (lane == 0) zs[warp] = z;
  __syncthreads();
  store_chunk_partials<E, THREADS, W>(a, chunk, hist, zs, [&](int e) {
    float sc = part[0][e];
#pragma unroll
    for (int w = 1; w < W; ++w) sc += part[w][e];
    return sc;
  });
}

}  // namespace router_detail

// Softmax and top-K per token: one thread per token up to kThreadRouterExperts experts, else one warp.
template <int E, int K, int P>
__device__ __forceinline__ void router_per_warp(const RoutingArgs& a);

template <int E, int K, int P>
__device__ __forceinline__ void router_kernel(const RoutingArgs& a) {
  if constexpr (E <= kThreadRouterExperts) router_detail::router_per_thread<E, K, P>(a);
  else router_per_warp<E, K, P>(a);
}

template <int E, int K, int P>
__device__ __forceinline__ void router_per_warp(const RoutingArgs& a) {
  using namespace router_detail;
  static_assert(E >= 1 && E <= kMaxRoutingExperts && K >= 1 && K <= E && P >= 0 && P <= 2, "bad router shape");
  constexpr int N = SoftmaxRow<E>::N;  // ≤ 32: one bit per register slot in `picked`
  __shared__ int hist[E];
  __shared__ float scores[E];
  __shared__ float bias[E];  // the expert bias (zeros without one): the selection reads it from here, so
                             // no global load of a null pointer can be issued speculatively
  constexpr int W = router_warps(E), THREADS = 32 * W, PER_WARP = kRouteChunkTokens / W;
  __shared__ float zs[W];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunk = blockIdx.x;
  for (int e = threadIdx.x; e < E; e += THREADS) hist[e] = 0, bias[e] = a.expert_bias ? a.expert_bias[e] : 0.f;
  const bool biased = a.expert_bias != nullptr;
  __syncthreads();

  float acc[N];  // Σ over this warp's tokens of p[t, lane + 32i]
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.f;
  float z = 0.f;
  const int64_t t0 = chunk * kRouteChunkTokens + warp * PER_WARP;
  // The warp's tokens go in batches of D whose logits are all requested before the first is used: one
  // memory latency per batch instead of one per token (the kernel's time was D such latencies in a row).
  // D·N ≤ 16 registers of logits: at 1024 threads a thread has 64 (E = 256 spilled with 32).
  constexpr int D = PER_WARP < 16 / N ? PER_WARP : (16 / N > 0 ? 16 / N : 1);
  float raw[D][N];
#pragma unroll 1
  for (int j = 0; j < PER_WARP; ++j) {
    const int64_t t = t0 + j;
    if (t >= a.tokens) break;  // warp-uniform
    if (j % D == 0) {
#pragma unroll
      for (int d = 0; d < D; ++d)
        if (t + d < a.tokens && j + d < PER_WARP) SoftmaxRow<E>::fetch(a.logits + (t + d) * E, lane, raw[d]);
    }
    // raw[j % D]: a runtime index into a register array would go to local memory; select by unrolled d.
    float cur[N];
#pragma unroll
    for (int d = 0; d < D; ++d)
#pragma unroll
      for (int i = 0; i < N; ++i)
        if (d == j % D) cur[i] = raw[d][i];
    SoftmaxRow<E> row;
    row.set(cur, lane);
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += row.p[i];
    z += row.lse * row.lse;

    int32_t* ids = a.s.expert_ids + t * K;
    float* weights = a.s.weights + t * K;
    unsigned picked = 0;  // bit i: expert lane + 32i is selected
    float norm = 0.f;
#pragma unroll 1
    for (int k = 0; k < K; ++k) {
      // This lane's best unselected expert (ascending e, strict >: the lower index wins ties), then the
      // warp's by (key desc, expert asc), a total order: every lane ends with the same winner. The key is
      // the probability plus the expert's bias.
      float best = kLowest;
      int arg = 0x7fffffff;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int e = lane + 32 * i;
        const float key = e < E ? row.p[i] + bias[min(e, E - 1)] : kLowest;  // no bias: p + 0 = p exactly
        if (e < E && !((picked >> i) & 1u) && key > best) {
          best = key;
          arg = e;
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(kFullMask, best, o);
        const int oa = __shfl_xor_sync(kFullMask, arg, o);
        if (ob > best || (ob == best && oa < arg)) {
          best = ob;
          arg = oa;
        }
      }
      if (biased) {
        // The weight is the winner's unbiased probability, from the lane that holds it.
        float mine = 0.f;
#pragma unroll
        for (int i = 0; i < N; ++i)
          if (lane + 32 * i == arg) mine = row.p[i];
        best = __shfl_sync(kFullMask, mine, arg & 31);
      }
      if ((arg & 31) == lane) {
        picked |= 1u << (arg >> 5);
        atomicAdd(&hist[arg], 1);  // integer: order-independent
      }
      if ((k & 31) == lane) {
        ids[k] = arg;
        weights[k] = best;
      }
      norm += P == 2 ? best * best : best;
    }
    if constexpr (P != 0) {
      // Each lane rescales the weights it wrote itself (k ≡ lane mod 32): program order makes them visible.
      const float inv = 1.f / (P == 1 ? norm : sqrtf(norm));
#pragma unroll 1
      for (int k = lane; k < K; k += 32) weights[k] *= inv;
    }
  }

  // Combine the warps in index order: scores = ((acc_0 + acc_1) + acc_2) + …
  if (lane == 0) zs[warp] = z;
#pragma unroll 1
  for (int w = 0; w < W; ++w) {
    if (warp == w) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int e = lane + 32 * i;
        if (e < E) scores[e] = w == 0 ? acc[i] : scores[e] + acc[i];
      }
    }
    __syncthreads();
  }
  store_chunk_partials<E, THREADS, W>(a, chunk, hist, zs, [&](int e) { return scores[e]; });
}

// One CTA: per-expert counts and chunk prefixes, bins and padded_bins by block-wide scans, block_rows and
// the two (weighted) losses. The chunks are cut into S = THREADS / E segments and thread s·E + e walks
// segment s of expert e's column (E = 64: 16 threads per column where one walked all of it, and that
// walk was the kernel's time); the segments' totals meet in shared memory in segment order.
template <int E, int K, int B>
__device__ __forceinline__ void bins_kernel(const RoutingArgs& a) {
  using namespace router_detail;
  constexpr int THREADS = kMaxRoutingExperts, S = THREADS / E;
  static_assert(E >= 1 && E <= THREADS && K >= 1 && K <= E && B >= 1, "bad bins shape");
  __shared__ int scan_counts[THREADS / 32], scan_padded[THREADS / 32];
  __shared__ float sums[THREADS / 32];
  __shared__ int seg_count[S * E];
  __shared__ float seg_score[S * E];
  const int e = threadIdx.x;  // below E: the expert whose totals this thread scans
  const int col = threadIdx.x % E, seg = threadIdx.x / E;
  const int64_t T = a.tokens, chunks = route_chunks(T);
  const int64_t per = (chunks + S - 1) / S;
  const int64_t c0 = seg < S ? min(chunks, seg * per) : chunks, c1 = min(chunks, c0 + per);

  // G loads in flight per thread: a group's loads are all issued before its sums.
  constexpr int G = 16;
  if (seg < S) {
    int n_sum = 0;
    float sc_sum = 0.f;  // Σ softmax over the segment's chunks, in chunk order
    int64_t c = c0;
#pragma unroll 1
    for (; c + G <= c1; c += G) {
      int n[G];
      float sc[G];
#pragma unroll
      for (int g = 0; g < G; ++g) {
        n[g] = a.s.chunk_hist[(c + g) * E + col];
        sc[g] = a.s.chunk_scores[(c + g) * E + col];
      }
#pragma unroll
      for (int g = 0; g < G; ++g) n_sum += n[g], sc_sum += sc[g];
    }
#pragma unroll 1
    for (; c < c1; ++c) {
      n_sum += a.s.chunk_hist[c * E + col];
      sc_sum += a.s.chunk_scores[c * E + col];
    }
    seg_count[seg * E + col] = n_sum;
    seg_score[seg * E + col] = sc_sum;
  }
  __syncthreads();
  if (seg < S) {
    // The exclusive prefix over chunks, from the earlier segments' totals; the segment's counts again
    // (this CTA just read them: cache hits).
    int prefix = 0;
    for (int s = 0; s < seg; ++s) prefix += seg_count[s * E + col];
    int64_t c = c0;
#pragma unroll 1
    for (; c + G <= c1; c += G) {
      int n[G];
#pragma unroll
      for (int g = 0; g < G; ++g) n[g] = a.s.chunk_hist[(c + g) * E + col];
#pragma unroll
      for (int g = 0; g < G; ++g) {
        a.s.chunk_offsets[(c + g) * E + col] = prefix;
        prefix += n[g];
      }
    }
#pragma unroll 1
    for (; c < c1; ++c) {
      a.s.chunk_offsets[c * E + col] = prefix;
      prefix += a.s.chunk_hist[c * E + col];
    }
  }
  int count = 0;
  float score = 0.f;  // Σ_t softmax[t, e]: the segments' sums in segment order
  if (e < E) {
#pragma unroll 1
    for (int s = 0; s < S; ++s) {
      count += seg_count[s * E + e];
      score = s == 0 ? seg_score[e] : score + seg_score[s * E + e];
    }
  }
  const int bins = block_inclusive_scan<THREADS>(count, scan_counts);
  const int padded = block_inclusive_scan<THREADS>((count + B - 1) / B * B, scan_padded);
  if (e < E) {
    a.s.counts[e] = count;
    a.s.bins[e] = bins;
    a.s.padded_bins[e] = padded;
  }
  if (e == E - 1) *a.s.block_rows = padded / B;

  const float lbl = block_sum<THREADS>(float(count) * score, sums);
  float z = 0.f;
#pragma unroll 1
  for (int64_t c = e; c < chunks; c += THREADS) z += a.s.chunk_z[c];
  z = block_sum<THREADS>(z, sums);
  if (e == 0) {
    const float t = float(T);
    a.s.losses[0] = T > 0 ? float(E) * a.lbl_weight / (t * float(K)) * (lbl / t) : 0.f;
    a.s.losses[1] = T > 0 ? a.z_weight * (z / t) : 0.f;
  }
}

namespace router_detail {

// A thread's row of E floats in shared memory, 16-byte aligned, in pieces of 4 (the last one partial
// when E % 4 != 0: scalar accesses past E skipped).
template <int E>
struct RowAccess {
  static constexpr int kPieces = (E + 3) / 4;
  __device__ __forceinline__ static constexpr bool valid(int q, int j) { return 4 * q + j < E; }
  __device__ __forceinline__ static void get(const float* row, int q, float (&v)[4]) {
    if (E % 4 == 0 || 4 * q + 3 < E) {
      unsigned u[4];
      ptx::ld_shared_v4_u32(ptx::smem_addr(row + 4 * q), u);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = __uint_as_float(u[j]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = valid(q, j) ? row[4 * q + j] : 0.f;
    }
  }
  __device__ __forceinline__ static void put(float* row, int q, const float (&v)[4]) {
    if (E % 4 == 0 || 4 * q + 3 < E) {
      const unsigned u[4] = {__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                             __float_as_uint(v[3])};
      ptx::st_shared_v4_u32(ptx::smem_addr(row + 4 * q), u);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (valid(q, j)) row[4 * q + j] = v[j];
    }
  }
};

// dlogits for one token per thread (router_grad_per_thread(E, K)): the same gradient as the warp form
// below, without its chains of butterflies per token (the warp form ran at half the copy rate at T = 64K,
// E = 64). The CTA's 32 tokens' logits are one contiguous block: loaded into shared memory with
// coalesced 16-byte loads, each thread works on its own row there (softmax, then the dlogits in place;
// the row stride E + 4 floats, rounded to 4, keeps a quarter-warp's 16-byte accesses to 8 rows on
// distinct banks), and the block goes out with coalesced stores. Keeping the row in registers instead
// cost 127-167 registers and, storing rows per thread, 32 lines per warp store: 1.6x slower than the
// warp form (session 13 call 6). Sums in a fixed order: bitwise reproducible, not the warp form's bits.
template <class Elem, int E, int K, int P>
__device__ __forceinline__ void router_grad_thread(const RoutingArgs& a) {
  static_assert(router_grad_per_thread(E, K), "one thread per token");
  constexpr int THREADS = kThreadRouterGradTokens;
  constexpr int LD = (E + 3) / 4 * 4 + 4;
  __shared__ float lbl_count[E];  // the load-balancing loss's gradient through each expert's score
  __shared__ __align__(16) float tile[THREADS * LD];
  const float T = float(a.tokens);
  const float lbl = a.d_lbl * a.lbl_weight * float(E) / (T * float(K) * T);  // × count_e
  for (int e = threadIdx.x; e < E; e += THREADS) lbl_count[e] = lbl * float(ptx::ld_nc_s32(a.s.counts + e));
  const int64_t t0 = int64_t(blockIdx.x) * THREADS;
  const int rows = int(a.tokens - t0 < THREADS ? a.tokens - t0 : THREADS);  // ≥ 1: the grid covers T
  const float* src = a.logits + t0 * E;
  if (E % 4 == 0 && (reinterpret_cast<unsigned long long>(a.logits) & 15) == 0) {
    constexpr int G = E / 4;
#pragma unroll 4
    for (int c = threadIdx.x; c < rows * G; c += THREADS) {
      unsigned v[4];
      ptx::ld_nc_v4_u32(src + int64_t(c) * 4, v);
      ptx::st_shared_v4_u32(ptx::smem_addr(tile + (c / G) * LD + (c % G) * 4), v);
    }
  } else {
#pragma unroll 4
    for (int c = threadIdx.x; c < rows * E; c += THREADS) tile[(c / E) * LD + c % E] = ptx::ld_nc_f32(src + c);
  }
  __syncthreads();

  if (int(threadIdx.x) < rows) {
    const int64_t t = t0 + threadIdx.x;
    float* row = tile + threadIdx.x * LD;
    // The row in 16-byte pieces (E % 4 == 0): one access per quarter-warp phase, no bank conflicts;
    // single floats at stride LD would meet 4 to a bank.
    using Row = RowAccess<E>;
    // Softmax in place: row = exp(logit − max) (unnormalized), then × 1 / Σ where read.
    float m = kLowest;
#pragma unroll
    for (int q = 0; q < Row::kPieces; ++q) {
      float v[4];
      Row::get(row, q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) m = Row::valid(q, j) && v[j] > m ? v[j] : m;
    }
    float sum = 0.f;
#pragma unroll
    for (int q = 0; q < Row::kPieces; ++q) {
      float v[4];
      Row::get(row, q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j] = Row::valid(q, j) ? expf(v[j] - m) : 0.f;
        sum += v[j];
      }
      Row::put(row, q, v);
    }
    const float inv = 1.f / sum;
    const float lse = m + logf(sum);

    int id[K];
    float dw[K], ps[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      id[k] = ptx::ld_nc_s32(a.s.expert_ids + t * K + k);
      dw[k] = ptx::ld_nc_f32(a.dweights + t * K + k);
      ps[k] = row[id[k]] * inv;  // shared memory: indexed at run time without local memory
    }
    // Renormalization w_k = p_k / S: P = 1, S = Σ_sel p: ∂L/∂p_j = (dw_j − D) / S;
    // P = 2, S = (Σ_sel p²)^½: ∂L/∂p_j = (dw_j − w_j·D) / S; D = Σ_k dw_k·w_k.
    float adj[K];
    if constexpr (P == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) adj[k] = dw[k];
    } else {
      float s2 = 0.f, d = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        s2 += P == 1 ? ps[k] : ps[k] * ps[k];
        d += dw[k] * ps[k];
      }
      const float inv_s = 1.f / (P == 1 ? s2 : sqrtf(s2));
      const float D = d * inv_s;
#pragma unroll
      for (int k = 0; k < K; ++k) adj[k] = (dw[k] - (P == 1 ? D : ps[k] * inv_s * D)) * inv_s;
    }
    // g_e = lbl·count_e + adj_k at e = id_k; dlogit_e = p_e·(g_e − dot) + zc·p_e, dot = Σ_j p_j·g_j: the warp
    // form's expression term for term. Where one expert holds p = 1 in fp32 (a bias of 64 on one logit),
    // dot rounds to exactly its g and g − dot is 0; regrouped as p_e·(lbl_e − dot + zc) + p_e·adj_k the
    // rounding of dot stays behind, against true dlogits near 1e-28: layer_test's OneExpert routing failed
    // that way (drouter relative error 2.5e15, session 13 call 7; this form passed it in session 14 call 1).
    auto g_of = [&](int e) {
      float g = lbl_count[e];
#pragma unroll
      for (int k = 0; k < K; ++k) g += id[k] == e ? adj[k] : 0.f;
      return g;
    };
    // dot as Σ_e p_e·lbl_e, then + p_k·adj_k: where p = 1 it rounds lbl + adj once, as g does.
    float dot = 0.f;
#pragma unroll
    for (int q = 0; q < Row::kPieces; ++q) {
      float v[4];
      Row::get(row, q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (Row::valid(q, j)) dot = fmaf(v[j] * inv, lbl_count[4 * q + j], dot);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) dot = fmaf(ps[k], adj[k], dot);
    const float zc = a.d_z * a.z_weight * 2.f * lse / T;
#pragma unroll
    for (int q = 0; q < Row::kPieces; ++q) {
      float v[4];
      Row::get(row, q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (!Row::valid(q, j)) continue;
        const float p = v[j] * inv;
        v[j] = p * (g_of(4 * q + j) - dot) + zc * p;
      }
      Row::put(row, q, v);
    }
  }
  __syncthreads();

  if (float* out = a.dlogits ? a.dlogits + t0 * E : nullptr) {
    if (E % 4 == 0 && (reinterpret_cast<unsigned long long>(a.dlogits) & 15) == 0) {
      constexpr int G = E / 4;  // 16-byte groups per row
#pragma unroll 4
      for (int c = threadIdx.x; c < rows * G; c += THREADS) {
        unsigned v[4];
        ptx::ld_shared_v4_u32(ptx::smem_addr(tile + (c / G) * LD + (c % G) * 4), v);
        ptx::st_v4_u32(out + int64_t(c) * 4, v);
      }
    } else {
#pragma unroll 4
      for (int c = threadIdx.x; c < rows * E; c += THREADS) ptx::st_f32(out + c, tile[(c / E) * LD + c % E]);
    }
  }
  if (a.dlogits_lp) {
    unsigned short* out = static_cast<unsigned short*>(a.dlogits_lp) + t0 * E;
    if (E % 8 == 0 && (reinterpret_cast<unsigned long long>(a.dlogits_lp) & 15) == 0) {
      constexpr int G = E / 8;  // 16-byte groups of 8 values per row
#pragma unroll 4
      for (int c = threadIdx.x; c < rows * G; c += THREADS) {
        const float* v = tile + (c / G) * LD + (c % G) * 8;
        unsigned lo[4], hi[4];
        ptx::ld_shared_v4_u32(ptx::smem_addr(v), lo);
        ptx::ld_shared_v4_u32(ptx::smem_addr(v + 4), hi);
        const float f[8] = {__uint_as_float(lo[0]), __uint_as_float(lo[1]), __uint_as_float(lo[2]),
                            __uint_as_float(lo[3]), __uint_as_float(hi[0]), __uint_as_float(hi[1]),
                            __uint_as_float(hi[2]), __uint_as_float(hi[3])};
        st_v4(out + int64_t(c) * 8, pack<Elem>(f));
      }
    } else {
#pragma unroll 4
      for (int c = threadIdx.x; c < rows * E; c += THREADS) out[c] = Elem::from_float(tile[(c / E) * LD + c % E]);
    }
  }
}

// dlogits for one token per warp: the selected weights' gradient through the softmax (selection fixed),
// plus the load-balancing loss (through the scores) and the z-loss. Written in fp32 to a.dlogits and,
// rounded once to Elem, to a.dlogits_lp (each when set).
template <class Elem, int E, int K, int P>
__device__ __forceinline__ void router_grad_warp(const RoutingArgs& a) {
  static_assert(E >= 1 && E <= kMaxRoutingExperts && K >= 1 && K <= E && P >= 0 && P <= 2, "bad router shape");
  constexpr int N = SoftmaxRow<E>::N;
  const int lane = threadIdx.x & 31;
  const int64_t t = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= a.tokens) return;  // warp-uniform
  SoftmaxRow<E> row;
  row.load(a.logits + t * E, lane);

  // dw onto the lanes owning the selected experts: dp[i] = dw of expert lane + 32i (0 if not selected).
  float dp[N];
#pragma unroll
  for (int i = 0; i < N; ++i) dp[i] = 0.f;
  unsigned picked = 0;
#pragma unroll 1
  for (int k0 = 0; k0 < K; k0 += 32) {
    const bool in = k0 + lane < K;
    const int my_e = in ? ptx::ld_nc_s32(a.s.expert_ids + t * K + k0 + lane) : -1;
    const float my_g = in ? ptx::ld_nc_f32(a.dweights + t * K + k0 + lane) : 0.f;
    const int n = K - k0 < 32 ? K - k0 : 32;
#pragma unroll 1
    for (int j = 0; j < n; ++j) {
      const int e = __shfl_sync(kFullMask, my_e, j);
      const float g = __shfl_sync(kFullMask, my_g, j);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if (e == lane + 32 * i) {
          dp[i] += g;
          picked |= 1u << i;
        }
      }
    }
  }
  // Renormalization w_k = p_k / S: P = 1, S = Σ_sel p: ∂L/∂p_j = (dw_j − D) / S;
  // P = 2, S = (Σ_sel p²)^½: ∂L/∂p_j = (dw_j − w_j·D) / S; D = Σ_k dw_k·w_k.
  float inv_s = 1.f, D = 0.f;
  if constexpr (P != 0) {
    float s = 0.f, d = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if ((picked >> i) & 1u) {
        s += P == 1 ? row.p[i] : row.p[i] * row.p[i];
        d += dp[i] * row.p[i];
      }
    }
    s = warp_sum(s);
    inv_s = 1.f / (P == 1 ? s : sqrtf(s));
    D = warp_sum(d) * inv_s;
  }
  const float T = float(a.tokens);
  const float lbl = a.d_lbl * a.lbl_weight * float(E) / (T * float(K) * T);  // × count_e
  float dot = 0.f;                                                             // Σ_j p_j·dp_j
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int e = lane + 32 * i;
    float g = 0.f;
    if (e < E) {
      g = lbl * float(ptx::ld_nc_s32(a.s.counts + e));
      if ((picked >> i) & 1u) g += P == 0 ? dp[i] : (dp[i] - (P == 1 ? D : row.p[i] * inv_s * D)) * inv_s;
    }
    dp[i] = g;
    dot += row.p[i] * g;
  }
  dot = warp_sum(dot);
  const float zc = a.d_z * a.z_weight * 2.f * row.lse / T;
  float* out = a.dlogits ? a.dlogits + t * E : nullptr;
  unsigned short* out_lp = a.dlogits_lp ? static_cast<unsigned short*>(a.dlogits_lp) + t * E : nullptr;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int e = lane + 32 * i;
    if (e >= E) continue;
    const float v = row.p[i] * (dp[i] - dot) + zc * row.p[i];
    if (out) out[e] = v;
    if (out_lp) out_lp[e] = Elem::from_float(v);
  }
}

}  // namespace router_detail

// The gradient of the logits: one thread per token where router_grad_per_thread(E, K), else one warp.
template <class Elem, int E, int K, int P>
__device__ __forceinline__ void router_grad_kernel(const RoutingArgs& a) {
  if constexpr (router_grad_per_thread(E, K)) router_detail::router_grad_thread<Elem, E, K, P>(a);
  else router_detail::router_grad_warp<Elem, E, K, P>(a);
}

}  // namespace dmoe

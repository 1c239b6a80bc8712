// dmoe/routing_args.cuh — the kernel ABI of the routing chain (router → bins → permutation → topology →
// gather, and scatter on the way back) and of the gated experts' elementwise kernels (Glu, GluGrad),
// shared by host C++ and device code.
//
// No kernel's size depends on a value only the device knows: grids are sized from host-known upper
// bounds (tokens T, padded-row capacity), and kernels read the true sizes (counts, padded_bins,
// block_rows) from device memory, idle CTAs exiting early. Nothing in the chain needs the host to read
// a device value.
#pragma once
#include "dmoe/args.cuh"
#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

namespace dmoe {

// kRouteChunkTokens: tokens per router CTA, which is also the permutation's chunk: chunk c holds
// assignments [c·kRouteChunkTokens·K, (c+1)·kRouteChunkTokens·K). kMaxRoutingExperts: the largest
// expert count the routing kernels support (Bins runs one thread per expert). An enum, not constexpr
// variables, so NVRTC emits no global symbols for them.
// kGluVectors: 16-byte vectors (8 elements) each thread of Glu and GluGrad moves per operand, all loads
// in flight before the first store; a CTA of 256 threads covers 256·kGluVectors vectors.
enum : int32_t { kRouteChunkTokens = 256, kMaxRoutingExperts = 1024, kGluVectors = 4 };

// Device buffers of one routing pass, sized from upper bounds. Assignment i = t·K + k.
struct RoutingState {
  int32_t* expert_ids;    // [T·K]      Router: expert of assignment i (top-k order, best first)
  float* weights;         // [T·K]      Router: routing weight of assignment i
  int32_t* rows;          // [T·K]      Permute: padded row of assignment i
  int32_t* indices;       // [T·K]      Permute: assignment at sorted (unpadded) position p
  int32_t* bin_ids;       // [T·K]      Permute: expert at sorted position p
  int32_t* chunk_hist;    // [chunks·E] Router: assignments of chunk c to expert e
  int32_t* chunk_offsets; // [chunks·E] Bins: exclusive prefix of chunk_hist over chunks, per expert (a
                          //            separate array, so Bins may run again on the same histogram)
  float* chunk_scores;    // [chunks·E] Router: Σ over the chunk's tokens of softmax(logits)[t, e]
  float* chunk_z;         // [chunks]   Router: Σ over the chunk's tokens of logsumexp(logits_t)²
  int32_t* counts;        // [E]        Bins: assignments per expert
  int32_t* bins;          // [E]        Bins: inclusive cumsum of counts
  int32_t* padded_bins;   // [E]        Bins: inclusive cumsum of counts rounded up to B
  int32_t* block_rows;    // scalar     Bins: padded_bins[E−1] / B (the Topology's block_rows)
  float* losses;          // [2]        Bins: load-balancing loss, z-loss (already weighted)
  int32_t* row_tokens;    // [max_rows] Permute: token of padded row r; Gather: −1 on padding rows (optional,
                          //            null: not written). A gathering SDD reads its A rows through it.
};

// The topology the Topology kernel writes (the Topology struct's arrays, writable), capacity-sized:
// max_block_rows·F/B blocks, max_block_rows + 1 offsets, E·F/B + 1 transposed offsets.
struct TopologyOut {
  int32_t* row_indices;
  int32_t* column_indices;
  int32_t* offsets;
  int32_t* column_indices_t;
  int32_t* offsets_t;
  int32_t* block_offsets_t;
};

// One argument struct for every routing kernel; each reads the fields its comment names.
// Glu and GluGrad work on the sparse data [blocks, B, B] of the hidden activation (SDD outputs): the
// valid blocks are the first *s.block_rows · F/B (read on the device); blocks past them are not touched.
// Glu's h must not overlap a or g; GluGrad's da and dg may each be one of its inputs' buffers (e.g. da
// in dh's, dg in g's), element for element, but not each other's (templates/dmoe/kernels/glu.cuh).
struct RoutingArgs {
  const void* x;          // Jitter: input [T, H]; Gather: tokens x [T, H]; Scatter: expert output rows
                          // [max_rows, H]; ScatterGrad: dy [T, H]; Glu: a = x·W1ᵀ; GluGrad: dh
  void* y;                // Jitter: output [T, H]; Gather: permuted rows [max_rows, H] (null: only the
                          // padding rows of s.row_tokens are written); Scatter: y [T, H];
                          // ScatterGrad: gradient of the expert output rows [max_rows, H]; Glu: h;
                          // GluGrad: da
  const void* aux;        // ScatterGrad: the forward expert output rows [max_rows, H] (for dw); Glu: g =
                          // x·V1ᵀ (null: h = act(a)); GluGrad: a; Jitter (optional, null: none): [T, H]
                          // added after the scaling, y = x·U + aux (the layer's dx += U ⊙ (dlogits·Wr))
  const void* x2;         // Scatter (optional, null: none): second rows [max_rows, H], y[t] = Σ_k w·(x +
                          // x2)[row(t, k)] (gated dX = dA·W1 + dG·V1); GluGrad: g
  void* y2;               // GluGrad: dg
  const float* logits;    // Router, RouterGrad: router logits [T, E], fp32
  float* dlogits;         // RouterGrad: gradient of the logits [T, E] (null: not written)
  void* dlogits_lp;       // RouterGrad (optional, null: not written): the same rounded to the dtype [T, E]
  float* dweights;        // ScatterGrad: writes dw [T·K]; RouterGrad: reads it
  RoutingState s;
  TopologyOut topo;       // Topology
  int32_t tokens;         // T
  int32_t max_rows;       // padded-row capacity, a multiple of B (max_padded_rows of the shape)
  float lbl_weight;       // Bins: loss value; RouterGrad: its gradient
  float z_weight;
  float d_lbl;            // RouterGrad: upstream gradient of the (weighted) load-balancing loss
  float d_z;              // RouterGrad: upstream gradient of the (weighted) z-loss
  float jitter_eps;       // Jitter: x · U(1 − eps, 1 + eps)
  uint32_t seed_lo, seed_hi;  // Jitter: caller-supplied seed (when jitter_seed is null)
  int32_t weighted;       // Scatter: 1 multiplies row(t, k) by weights[t·K + k]; 0 sums (gather's backward)
  const uint64_t* jitter_seed;  // Jitter (optional, null: seed_lo/hi): {base seed, offset} in device memory,
                                // the noise's key jitter_key(base, offset): a graph replay reads new values
  uint64_t* jitter_next;  // Jitter (optional): thread 0 of CTA 0 writes offset + 1 here (the layer's counter,
                          // the next forward's offset; never the memory jitter_seed points to)
  const float* expert_bias;  // Router (optional, null: none): [E] fp32, finite, added to the probabilities for
                             // the top-K selection only; the weights stay the unbiased probabilities
};

// Warps of a Router CTA: 32 (1024 threads, 8 tokens per warp) keeps the GPU full; above 256 experts a
// token's softmax row needs more registers than 1024 threads can have, so 8 warps (32 tokens each).
// kThreadRouterExperts: up to this many experts the router runs one thread per token (8 warps per chunk).
enum : int32_t { kThreadRouterExperts = 64 };
DMOE_HD constexpr int router_warps(int experts) {
  return experts <= kThreadRouterExperts ? kRouteChunkTokens / 32 : experts <= 256 ? 32 : 8;
}

// RouterGrad runs one thread per token (kThreadRouterGradTokens per CTA, each token's row in shared
// memory) where E ≤ kThreadRouterExperts and K ≤ kThreadRouterGradTopK (its selections in registers),
// else one warp per token (8 per CTA of 256 threads). Measured on the H200 (session 14 call 1): the thread
// form wins at K 1–2 (T 64K E 64 K 1 18.8 → 16.1 µs, T 16K E 8 K 2 5.8 → 3.7) and loses at K 6–8 (T 16K
// E 64 K 8 7.6 → 9.0, T 8K K 6 4.2 → 8.0: the per-selection loops serialize in one thread). 32 tokens per
// CTA: 256 CTAs at T = 8K (128 left 68 of 132 SMs idle).
enum : int32_t { kThreadRouterGradTopK = 2, kThreadRouterGradTokens = 32 };
DMOE_HD constexpr bool router_grad_per_thread(int experts, int top_k) {
  return experts <= kThreadRouterExperts && top_k <= kThreadRouterGradTopK;
}
DMOE_HD constexpr int router_grad_threads(int experts, int top_k) {
  return router_grad_per_thread(experts, top_k) ? kThreadRouterGradTokens : 256;
}
DMOE_HD constexpr int router_grad_tokens_per_cta(int experts, int top_k) {
  return router_grad_per_thread(experts, top_k) ? kThreadRouterGradTokens : 8;
}

// Jitter: 16-byte vectors per thread (256 threads per CTA, 256 · 8 elements apart).
enum : int32_t { kJitterVectors = 4 };

DMOE_HD inline int64_t route_chunks(int64_t tokens) { return (tokens + kRouteChunkTokens - 1) / kRouteChunkTokens; }

// The jitter's key for one forward: a base seed and the forward's offset (philox-style), a bijection of
// the offset for each seed.
DMOE_HD inline uint64_t jitter_key(uint64_t seed, uint64_t offset) { return seed ^ (offset * 0xd1b54a32d192ed03ull); }

// Jitter noise: a counter-based hash of (seed, element), uniform in [1 − eps, 1 + eps). Host and device
// share this definition so the CPU reference reproduces the device's noise bit for bit.
DMOE_HD inline float jitter_factor(uint32_t seed_lo, uint32_t seed_hi, uint64_t element, float eps) {
  uint64_t z = element + ((uint64_t(seed_hi) << 32) | seed_lo) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;  // splitmix64 finalizer
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const float u = float(uint32_t(z >> 40)) * (1.0f / 16777216.0f);  // 24 bits: exact in fp32, [0, 1)
  return fmaf(2.0f * eps, u, 1.0f - eps);  // one rounding on both sides: bit-identical host and device
}

}  // namespace dmoe

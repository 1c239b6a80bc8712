// dmoe/kernels/glu.cuh — the gated experts' (GLU / SwiGLU) elementwise kernels on the sparse data
// [blocks, B, B] of the hidden activation: h = act(a) ⊙ g forward, where a = x·W1ᵀ and g = x·V1ᵀ are SDD
// outputs, and its backward. Work mapping (routing_grid in runtime/routing.cpp): 256 threads per CTA;
// CTA c owns the 16-byte vectors [c·256·kGluVectors, (c + 1)·256·kGluVectors), thread i the vectors
// c·256·kGluVectors + u·256 + i, u < kGluVectors (each u coalesced over the CTA). The grid covers the
// capacity max_rows·F elements; the valid ones, the first *s.block_rows · B · F, are read on the device and
// threads past them exit. Arithmetic in fp32, each output rounded once.
#pragma once
#include "dmoe/common/activation.cuh"
#include "dmoe/common/types.cuh"
#include "dmoe/common/vec8.cuh"
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/routing_args.cuh"

namespace dmoe {
namespace glu_detail {

enum : int { kThreads = 256 };

// Valid 16-byte vectors of the sparse data: *block_rows · B · F / 8, clamped to the capacity.
template <int B, int F>
__device__ __forceinline__ int64_t valid_vectors(const RoutingArgs& a) {
  static_assert((int64_t(B) * F) % 8 == 0, "blocks move as 16-byte vectors");
  const int64_t rows = int64_t(ptx::ld_nc_s32(a.s.block_rows)) * B;
  return (rows < a.max_rows ? rows : int64_t(a.max_rows)) * F / 8;
}

}  // namespace glu_detail

// h = act(a) ⊙ g. a is args.x, g args.aux, h args.y; h must not overlap a or g (read through the
// non-coherent path; the forward keeps a and g for the backward anyway). With g null, h = act(a)·1: the
// plain layer's activation, recomputed from its saved pre-activation (LayerOptions::recompute).
template <class Elem, int B, int F, int Act>
__device__ __forceinline__ void glu_kernel(const RoutingArgs& args) {
  using namespace glu_detail;
  static_assert(Act >= kEpiNone && Act <= kEpiRelu, "Glu takes a forward activation");
  constexpr int U = kGluVectors;
  const int64_t n = valid_vectors<B, F>(args);
  const int64_t first = int64_t(blockIdx.x) * (kThreads * U) + threadIdx.x;
  if (first >= n) return;
  const Vec8* a = static_cast<const Vec8*>(args.x);
  // Without g the loads read a again (always valid memory: the inline-asm loads may be executed
  // speculatively, so a null g must never reach one) and the product uses 1.
  const bool gated = args.aux != nullptr;
  const Vec8* g = gated ? static_cast<const Vec8*>(args.aux) : a;
  Vec8* h = static_cast<Vec8*>(args.y);
  Vec8 va[U], vg[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = first + u * kThreads;
    if (v < n) {
      va[u] = ld_nc_v4(a + v);
      vg[u] = ld_nc_v4(g + v);
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = first + u * kThreads;
    if (v >= n) break;
    float fa[8], fg[8];
    unpack<Elem>(va[u], fa);
    unpack<Elem>(vg[u], fg);
#pragma unroll
    for (int j = 0; j < 8; ++j) fa[j] = apply_act<Act>(fa[j]) * (gated ? fg[j] : 1.f);
    st_v4(h + v, pack<Elem>(fa));
  }
}

// da = dh ⊙ g ⊙ act'(a), dg = dh ⊙ act(a). dh is args.x, a args.aux, g args.x2; da is args.y, dg
// args.y2. Either output may be one of the inputs' buffers, element for element (da in dh's, dg in g's, or
// either in a's), but not the other output's: a thread reads all its inputs (coherent loads) before it
// writes, and no other thread touches its elements.
template <class Elem, int B, int F, int Act>
__device__ __forceinline__ void glu_grad_kernel(const RoutingArgs& args) {
  using namespace glu_detail;
  static_assert(Act >= kEpiNone && Act <= kEpiRelu, "GluGrad takes the forward activation");
  constexpr int U = kGluVectors;
  const int64_t n = valid_vectors<B, F>(args);
  const int64_t first = int64_t(blockIdx.x) * (kThreads * U) + threadIdx.x;
  if (first >= n) return;
  const Vec8* dh = static_cast<const Vec8*>(args.x);
  const Vec8* a = static_cast<const Vec8*>(args.aux);
  const Vec8* g = static_cast<const Vec8*>(args.x2);
  Vec8* da = static_cast<Vec8*>(args.y);
  Vec8* dg = static_cast<Vec8*>(args.y2);
  Vec8 vd[U], va[U], vg[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = first + u * kThreads;
    if (v < n) {
      vd[u] = ld_v4(dh + v);
      va[u] = ld_v4(a + v);
      vg[u] = ld_v4(g + v);
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = first + u * kThreads;
    if (v >= n) break;
    float fd[8], fa[8], fg[8];
    unpack<Elem>(vd[u], fd);
    unpack<Elem>(va[u], fa);
    unpack<Elem>(vg[u], fg);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float y, dy;
      act_and_grad<Act>(fa[j], y, dy);
      const float d = fd[j];
      fd[j] = d * fg[j] * dy;  // da
      fg[j] = d * y;           // dg
    }
    st_v4(da + v, pack<Elem>(fd));
    st_v4(dg + v, pack<Elem>(fg));
  }
}

}  // namespace dmoe

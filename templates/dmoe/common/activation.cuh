// dmoe/common/activation.cuh — the fused SDD epilogues: the layer's activation and its derivative, in
// fp32 on the accumulator. Numbering matches dmoe::Epilogue on the host.
#pragma once

namespace dmoe {

enum EpilogueKind : int { kEpiNone = 0, kEpiGelu, kEpiSilu, kEpiRelu, kEpiGeluGrad, kEpiSiluGrad, kEpiReluGrad };

__host__ __device__ constexpr bool epilogue_is_gradient(int e) { return e >= kEpiGeluGrad; }

namespace act {

__device__ __forceinline__ float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1 / (1 + e^-x) through ex2 (e^-x = 2^(-x·log2 e)) and the approximate reciprocal: 1 ulp, far below the
// 16-bit rounding that follows, where an IEEE division costs a Newton step and a slow-path call per
// element. 1 + e ≥ 1, so flushing subnormal inputs changes nothing; e = +inf gives 0.
__device__ __forceinline__ float sigmoid(float x) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-1.4426950408889634f * x));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.f + e));
  return r;
}

constexpr float kGeluC0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC1 = 0.044715f;

// The tanh argument c0·(x + c1·x³) = x·(c0 + c0·c1·x²): one FFMA and one FMUL after x².
__device__ __forceinline__ float gelu_tanh(float x, float x2) {
  return tanh_approx(x * fmaf(kGeluC0 * kGeluC1, x2, kGeluC0));
}
// 0.5·x·(1 + t) = h + h·t with h = x / 2.
__device__ __forceinline__ float gelu_from(float x, float t) {
  const float h = 0.5f * x;
  return fmaf(h, t, h);
}
// 0.5·(1 + t) + 0.5·x·(1 − t²)·c0·(1 + 3·c1·x²), as four FFMAs and two FMULs.
__device__ __forceinline__ float gelu_grad_from(float x, float x2, float t) {
  const float q = fmaf(3.f * kGeluC0 * kGeluC1, x2, kGeluC0);  // c0·(1 + 3·c1·x²)
  const float s = fmaf(-t, t, 1.f);                            // 1 − t²
  return fmaf(0.5f * x * s, q, fmaf(0.5f, t, 0.5f));
}
__device__ __forceinline__ float gelu(float x) { return gelu_from(x, gelu_tanh(x, x * x)); }
__device__ __forceinline__ float gelu_grad(float x) {
  const float x2 = x * x;
  return gelu_grad_from(x, x2, gelu_tanh(x, x2));
}
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }
__device__ __forceinline__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

}  // namespace act

// The forward epilogue: act(acc). Gradient epilogues use apply_grad instead.
template <int Epi>
__device__ __forceinline__ float apply_act(float x) {
  if constexpr (Epi == kEpiGelu) return act::gelu(x);
  else if constexpr (Epi == kEpiSilu) return act::silu(x);
  else if constexpr (Epi == kEpiRelu) return x > 0.f ? x : 0.f;
  else return x;
}

// The backward epilogue: g · act'(pre).
template <int Epi>
__device__ __forceinline__ float apply_grad(float g, float pre) {
  if constexpr (Epi == kEpiGeluGrad) return g * act::gelu_grad(pre);
  else if constexpr (Epi == kEpiSiluGrad) return g * act::silu_grad(pre);
  else if constexpr (Epi == kEpiReluGrad) return pre > 0.f ? g : 0.f;
  else return g;
}

// act(x) and act'(x) together (Epi a forward epilogue), sharing the transcendental: the same values as
// apply_act<Epi>(x) and apply_grad<Epi's gradient>(1, x).
template <int Epi>
__device__ __forceinline__ void act_and_grad(float x, float& y, float& dy) {
  if constexpr (Epi == kEpiGelu) {
    const float x2 = x * x, t = act::gelu_tanh(x, x2);
    y = act::gelu_from(x, t);
    dy = act::gelu_grad_from(x, x2, t);
  } else if constexpr (Epi == kEpiSilu) {
    const float s = act::sigmoid(x);
    y = x * s;
    dy = s * (1.f + x * (1.f - s));
  } else if constexpr (Epi == kEpiRelu) {
    y = x > 0.f ? x : 0.f;
    dy = x > 0.f ? 1.f : 0.f;
  } else {
    y = x;
    dy = 1.f;
  }
}

}  // namespace dmoe

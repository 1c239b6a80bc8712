// dmoe/common/types.cuh — 16-bit element types without the toolkit's cuda_bf16.h / cuda_fp16.h, so a
// kernel compiles with NVRTC alone. Conversions go through the PTX wrappers.
#pragma once
#include "dmoe/args.cuh"
#include "dmoe/ptx/ptx.cuh"

namespace dmoe {

struct bf16_t {
  static constexpr bool kIsBf16 = true;
  unsigned short bits;
  static __device__ __forceinline__ float to_float(unsigned short b) { return ptx::bf16_bits_to_f32(b); }
  static __device__ __forceinline__ unsigned short from_float(float f) { return ptx::f32_to_bf16_bits(f); }
  // lo in bits 0–15, hi in 16–31: two adjacent elements for one 32-bit store.
  static __device__ __forceinline__ unsigned pack2(float lo, float hi) { return ptx::f32x2_to_bf16x2(lo, hi); }
};

struct fp16_t {
  static constexpr bool kIsBf16 = false;
  unsigned short bits;
  static __device__ __forceinline__ float to_float(unsigned short b) { return ptx::f16_bits_to_f32(b); }
  static __device__ __forceinline__ unsigned short from_float(float f) { return ptx::f32_to_f16_bits(f); }
  static __device__ __forceinline__ unsigned pack2(float lo, float hi) { return ptx::f32x2_to_f16x2(lo, hi); }
};

}  // namespace dmoe

// dmoe/common/vec8.cuh — 16-byte vectors of 8 16-bit elements: loads, stores, and their conversion to
// and from fp32. The routing and elementwise kernels move rows and blocks in these.
#pragma once
#include "dmoe/common/types.cuh"
#include "dmoe/ptx/ptx.cuh"

namespace dmoe {

struct alignas(16) Vec8 {
  unsigned w[4];
};

// Read-only data (the kernel never writes it): the non-coherent path.
__device__ __forceinline__ Vec8 ld_nc_v4(const void* p) {
  Vec8 v;
  ptx::ld_nc_v4_u32(p, v.w);
  return v;
}

// Data this kernel may also write (in place): a coherent load.
__device__ __forceinline__ Vec8 ld_v4(const void* p) {
  Vec8 v;
  ptx::ld_v4_u32(p, v.w);
  return v;
}

__device__ __forceinline__ void st_v4(void* p, const Vec8& v) { ptx::st_v4_u32(p, v.w); }

template <class Elem>
__device__ __forceinline__ void unpack(const Vec8& v, float (&f)[8]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    f[2 * j] = Elem::to_float(static_cast<unsigned short>(v.w[j] & 0xffffu));
    f[2 * j + 1] = Elem::to_float(static_cast<unsigned short>(v.w[j] >> 16));
  }
}

template <class Elem>
__device__ __forceinline__ Vec8 pack(const float (&f)[8]) {
  Vec8 v;
#pragma unroll
  for (int j = 0; j < 4; ++j)
    v.w[j] = uint32_t(Elem::from_float(f[2 * j])) | (uint32_t(Elem::from_float(f[2 * j + 1])) << 16);
  return v;
}

}  // namespace dmoe

// dmoe/ptx/ptx.cuh — thin wrappers, one PTX instruction each.
#pragma once

namespace dmoe::ptx {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Programmatic dependent launch (sm_90+). launch_dependents: the stream's next kernel, if launched
// programmatically, may start its CTAs once every CTA of this one has passed here (or exited). wait: until
// the previous kernel has completed and its writes are visible. Both do nothing for a kernel launched
// without the attribute.
__device__ __forceinline__ void griddep_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
#endif

// The 32-bit shared-memory address of a generic pointer into shared memory (what .shared operands take).
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned a;
  asm("{\n.reg .u64 t;\ncvta.to.shared.u64 t, %1;\ncvt.u32.u64 %0, t;\n}\n" : "=r"(a) : "l"(p));
  return a;
}

__device__ __forceinline__ unsigned ld_shared_u32(unsigned addr) {
  unsigned v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

__device__ __forceinline__ void st_shared_u32(unsigned addr, unsigned v) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

// 16-byte shared-memory load (addr 16-byte aligned).
__device__ __forceinline__ void ld_shared_v4_u32(unsigned addr, unsigned (&v)[4]) {
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
               : "r"(addr)
               : "memory");
}

// 16-byte shared-memory store (addr 16-byte aligned).
__device__ __forceinline__ void st_shared_v4_u32(unsigned addr, const unsigned (&v)[4]) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(v[0]), "r"(v[1]), "r"(v[2]), "r"(v[3])
               : "memory");
}

// 16-bit load through the read-only (non-coherent) path: operands are never written by the kernel.
__device__ __forceinline__ unsigned short ld_nc_u16(const void* p) {
  unsigned short v;
  asm("ld.global.nc.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ void st_u16(void* p, unsigned short v) {
  asm volatile("st.global.u16 [%0], %1;" ::"l"(p), "h"(v) : "memory");
}

__device__ __forceinline__ int ld_nc_s32(const int* p) {
  int v;
  asm("ld.global.nc.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// The same load pinned in program order (volatile): for prefetches the compiler must not sink to the use.
__device__ __forceinline__ int ld_nc_s32_early(const int* p) {
  int v;
  asm volatile("ld.global.nc.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// bf16 is the upper half of an fp32: widening is a shift on every arch.
__device__ __forceinline__ float bf16_bits_to_f32(unsigned short b) {
  float f;
  asm("mov.b32 %0, {%2, %1};" : "=f"(f) : "h"(b), "h"((unsigned short)0));
  return f;
}

// Round to nearest even (cvt.rn.bf16.f32 needs sm_80, the oldest arch dmoe targets).
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
  unsigned short b;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
  return b;
}

__device__ __forceinline__ float f16_bits_to_f32(unsigned short b) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(b));
  return f;
}

__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
  unsigned short b;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(f));
  return b;
}

// Two fp32 → a packed pair, round to nearest even; the first source lands in the upper half.
__device__ __forceinline__ unsigned f32x2_to_bf16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ unsigned f32x2_to_f16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float ld_nc_f32(const float* p) {
  float v;
  asm("ld.global.nc.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

// 16-byte vector load and store (p 16-byte aligned). The load is coherent (not .nc), so a kernel may
// read and write the same buffer in place.
__device__ __forceinline__ void ld_v4_u32(const void* p, unsigned (&v)[4]) {
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
               : "l"(p)
               : "memory");
}

// Read-only (non-coherent) 16-byte load: for data the kernel never writes.
__device__ __forceinline__ void ld_nc_v4_u32(const void* p, unsigned (&v)[4]) {
  asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}

__device__ __forceinline__ void st_f32(float* p, float v) {
  asm volatile("st.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
}

__device__ __forceinline__ void st_v4_u32(void* p, const unsigned (&v)[4]) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v[0]), "r"(v[1]), "r"(v[2]), "r"(v[3])
               : "memory");
}

}  // namespace dmoe::ptx

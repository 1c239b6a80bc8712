// dmoe/ptx/sm80.cuh — Ampere's tensor-core path, one PTX instruction per wrapper: cp.async (global →
// shared, 16 bytes, bypassing L1) and its groups, ldmatrix, and mma.sync m16n8k16 with fp32 accumulators.
// sm_80 and later (sm_86, sm_89, sm_90a run them too).
#pragma once
#include "dmoe/ptx/ptx.cuh"

namespace dmoe::ptx {

// ---- cp.async ----------------------------------------------------------------------------------------
// Copies 16 bytes from global memory (16-byte aligned) to shared memory (16-byte aligned), caching at L2
// only: operand tiles are read once per CTA from shared memory, L1 would only hold them twice.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

// Closes the group of the cp.async issued since the last commit (an empty group is allowed).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Waits until at most N committed groups are still in flight (the thread's own copies only: a CTA
// barrier must follow before other threads read the data).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ---- ldmatrix ----------------------------------------------------------------------------------------
// Four 8×8 matrices of 16-bit elements; lane l gives the address of row l % 8 of matrix l / 8 (16 bytes
// each), and receives in r[j] the elements (l / 4, 2·(l % 4)) and (l / 4, 2·(l % 4) + 1) of matrix j.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// The same, transposed: r[j] holds elements (2·(l % 4), l / 4) and (2·(l % 4) + 1, l / 4) of matrix j.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// ---- mma.sync ----------------------------------------------------------------------------------------
// d += a · b for a 16×16 (row-major) by 16×8 (column-major) product, fp32 accumulators. Per lane (g =
// lane / 4, t = lane % 4): a = {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(2t.., g),
// (2t+8.., g)} as packed pairs, d = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                                  unsigned b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                                 unsigned b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace dmoe::ptx

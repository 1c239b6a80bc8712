// dmoe/cublaslt.hpp — cuBLASLt, loaded at run time with dlopen: the dense reference the benchmarks
// compare dmoe's products with.
//
// libdmoe links no cuBLAS library, so it builds and runs where cuBLASLt is absent; only constructing a
// CublasLt needs it. The library is looked up as $DMOE_LIBCUBLASLT, libcublasLt.so.13, libcublasLt.so,
// then /usr/local/cuda/lib64/libcublasLt.so.13. Every cuBLASLt status is checked: failures throw
// std::runtime_error naming the call and the status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "dmoe/driver.hpp"
#include "dmoe/spec.hpp"

namespace dmoe {

// A (strided-)batched GEMM in row-major terms: for each of `batch` problems,
//   C[m, n] = op(A) · op(B),  op(A) [m, k], op(B) [k, n],
// with A stored [m, k] (or [k, m] when trans_a) and row stride lda, likewise B and C; batch i's operands
// start stride_* elements after batch i − 1's. Inputs in `dtype`, fp32 accumulation; the output in
// `dtype`, or fp32 when out_fp32. With accumulate, C += op(A)·op(B) (C is read: beta = 1).
struct Gemm {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int32_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  DType dtype = DType::BF16;
  bool out_fp32 = false;
  bool accumulate = false;
};

// The dMoE layer's router GEMMs as runtime/layer.cpp plans them (row-major, the shape's dtype): logits
// [T, E] in fp32 = x·Wrᵀ; dWr [E, H] = dlogitsᵀ·x; dx [T, H] += dlogits·Wr (dlogits in the dtype).
struct RouterGemms {
  Gemm logits, drouter, dx;
};
RouterGemms router_gemms(const MoeShape&);

// One Gemm's descriptors and the algorithm the heuristic chose: built once, so a timing loop does no
// setup. Made by CublasLt::plan, run by CublasLt::run; valid while its CublasLt lives.
class GemmPlan {
 public:
  GemmPlan();
  ~GemmPlan();
  GemmPlan(GemmPlan&&) noexcept;
  GemmPlan& operator=(GemmPlan&&) noexcept;

 private:
  friend class CublasLt;
  struct State;
  bool accumulate_ = false;
  std::unique_ptr<State> state_;
};

class CublasLt {
 public:
  // The workspace every plan may use (the heuristic's limit) and the constructor allocates.
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  // Loads the library (throws NoGpu naming every path tried when none loads), creates the handle and a
  // kWorkspaceBytes workspace on `device` (from `alloc` when given).
  explicit CublasLt(const Device&, const Allocator& alloc = {});
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  // Throws InvalidArgument for a bad shape, std::runtime_error when cuBLASLt has no algorithm for it.
  // `algorithm`: which of cuBLASLt's heuristic candidates (0 = its first choice, up to 7); throws when the
  // heuristic offers fewer.
  GemmPlan plan(const Gemm&, int algorithm = 0);
  void run(const GemmPlan&, const void* a, const void* b, void* c, Stream);

  std::string library() const;  // the path or name that loaded
  size_t version() const;       // cublasLtGetVersion(), e.g. 130100

 private:
  struct Impl;
  const Device& device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dmoe

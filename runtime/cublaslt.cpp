#include "dmoe/cublaslt.hpp"

#include <cublasLt.h>  // types and prototypes only: the library is dlopen'ed
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <utility>
#include <vector>

namespace dmoe {
namespace {

#define DMOE_CUBLASLT_ENTRIES(ENTRY)          \
  ENTRY(cublasLtCreate)                       \
  ENTRY(cublasLtDestroy)                      \
  ENTRY(cublasLtGetStatusName)                \
  ENTRY(cublasLtGetVersion)                   \
  ENTRY(cublasLtMatmulDescCreate)             \
  ENTRY(cublasLtMatmulDescDestroy)            \
  ENTRY(cublasLtMatmulDescSetAttribute)       \
  ENTRY(cublasLtMatrixLayoutCreate)           \
  ENTRY(cublasLtMatrixLayoutDestroy)          \
  ENTRY(cublasLtMatrixLayoutSetAttribute)     \
  ENTRY(cublasLtMatmulPreferenceCreate)       \
  ENTRY(cublasLtMatmulPreferenceDestroy)      \
  ENTRY(cublasLtMatmulPreferenceSetAttribute) \
  ENTRY(cublasLtMatmulAlgoGetHeuristic)       \
  ENTRY(cublasLtMatmul)

struct Api {
#define DMOE_DECLARE(name) decltype(&::name) name = nullptr;
  DMOE_CUBLASLT_ENTRIES(DMOE_DECLARE)
#undef DMOE_DECLARE
  std::string path;
};

// The first candidate that opens and provides every entry. A loaded library is never closed: cuBLASLt
// keeps state that objects destroyed at exit may still use.
Api load_api() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("DMOE_LIBCUBLASLT"); env && *env) paths.emplace_back(env);
  for (const char* p : {"libcublasLt.so.13", "libcublasLt.so", "/usr/local/cuda/lib64/libcublasLt.so.13"})
    paths.emplace_back(p);
  std::string tried;
  for (const std::string& path : paths) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      tried += fmt::format("; {} ({})", path, dlerror());
      continue;
    }
    Api api;
    api.path = path;
    const char* missing = nullptr;
#define DMOE_LOOKUP(name) \
  if (!missing && !(api.name = reinterpret_cast<decltype(api.name)>(dlsym(lib, #name)))) missing = #name;
    DMOE_CUBLASLT_ENTRIES(DMOE_LOOKUP)
#undef DMOE_LOOKUP
    if (!missing) return api;
    tried += fmt::format("; {} (no symbol {})", path, missing);
    dlclose(lib);
  }
  throw NoGpu("no cuBLASLt: tried " + tried.substr(2));
}

[[noreturn, gnu::cold]] void throw_status(const Api& api, const char* call, cublasStatus_t s) {
  const char* name = api.cublasLtGetStatusName(s);
  throw std::runtime_error(fmt::format("{}: {} ({})", call, name ? name : "unknown status", int(s)));
}

#define DMOE_LT_CHECK(api, fn, ...)                                                 \
  do {                                                                              \
    if (cublasStatus_t dmoe_s = (api).fn(__VA_ARGS__); dmoe_s != CUBLAS_STATUS_SUCCESS) \
      throw_status(api, #fn, dmoe_s);                                               \
  } while (0)

cudaDataType_t data_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F; }

}  // namespace

struct GemmPlan::State {
  const Api* api = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLAS's (column-major) A, B, C
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;

  ~State() {
    for (cublasLtMatrixLayout_t l : {a, b, c})
      if (l) (void)api->cublasLtMatrixLayoutDestroy(l);
    if (desc) (void)api->cublasLtMatmulDescDestroy(desc);
  }
};

GemmPlan::GemmPlan() = default;
GemmPlan::~GemmPlan() = default;
GemmPlan::GemmPlan(GemmPlan&&) noexcept = default;
GemmPlan& GemmPlan::operator=(GemmPlan&&) noexcept = default;

struct CublasLt::Impl {
  Api api;
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;
};

CublasLt::CublasLt(const Device& device, const Allocator& alloc) : device_(device), impl_(std::make_unique<Impl>()) {
  impl_->api = load_api();
  device_.make_current();
  DMOE_LT_CHECK(impl_->api, cublasLtCreate, &impl_->handle);
  try {
    impl_->workspace = DeviceBuffer(device_, kWorkspaceBytes, alloc);
  } catch (...) {
    (void)impl_->api.cublasLtDestroy(impl_->handle);  // the destructor does not run for a throwing constructor
    throw;
  }
}

CublasLt::~CublasLt() {
  if (impl_->handle) (void)impl_->api.cublasLtDestroy(impl_->handle);
}

std::string CublasLt::library() const { return impl_->api.path; }
size_t CublasLt::version() const { return impl_->api.cublasLtGetVersion(); }

RouterGemms router_gemms(const MoeShape& s) {
  const int64_t T = s.tokens, H = s.hidden, E = s.experts;
  RouterGemms r;
  r.logits = {.m = T, .n = E, .k = H, .trans_a = false, .trans_b = true, .lda = H, .ldb = H, .ldc = E};
  r.logits.out_fp32 = true;
  r.drouter = {.m = E, .n = H, .k = T, .trans_a = true, .trans_b = false, .lda = E, .ldb = H, .ldc = H};
  r.dx = {.m = T, .n = H, .k = E, .trans_a = false, .trans_b = false, .lda = E, .ldb = H, .ldc = H};
  r.dx.accumulate = true;
  for (Gemm* g : {&r.logits, &r.drouter, &r.dx}) g->dtype = s.dtype;
  return r;
}

// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: a row-major [r, c] matrix with row stride
// ld is a column-major [c, r] one with the same ld, so cuBLAS gets B as its A and A as its B, m and n swap.
GemmPlan CublasLt::plan(const Gemm& g, int algorithm) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.batch <= 0)
    throw InvalidArgument(fmt::format("Gemm: m={} n={} k={} batch={} must be positive", g.m, g.n, g.k, g.batch));
  const int64_t min_lda = g.trans_a ? g.m : g.k, min_ldb = g.trans_b ? g.k : g.n;
  if (g.lda < min_lda || g.ldb < min_ldb || g.ldc < g.n)
    throw InvalidArgument(fmt::format("Gemm: lda={} ldb={} ldc={} below the row lengths {}, {}, {}", g.lda,
                                      g.ldb, g.ldc, min_lda, min_ldb, g.n));
  const Api& api = impl_->api;
  GemmPlan plan;
  plan.state_ = std::make_unique<GemmPlan::State>();
  GemmPlan::State& s = *plan.state_;
  s.api = &api;
  DMOE_LT_CHECK(api, cublasLtMatmulDescCreate, &s.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  DMOE_LT_CHECK(api, cublasLtMatmulDescSetAttribute, s.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a);
  DMOE_LT_CHECK(api, cublasLtMatmulDescSetAttribute, s.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b);

  // A row-major [rows, cols] matrix as cuBLAS's column-major [cols, rows].
  auto layout = [&](cublasLtMatrixLayout_t& l, int64_t rows, int64_t cols, int64_t ld, int64_t stride,
                    cudaDataType_t type) {
    DMOE_LT_CHECK(api, cublasLtMatrixLayoutCreate, &l, type, uint64_t(cols), uint64_t(rows), ld);
    if (g.batch == 1) return;
    DMOE_LT_CHECK(api, cublasLtMatrixLayoutSetAttribute, l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &g.batch,
                  sizeof g.batch);
    DMOE_LT_CHECK(api, cublasLtMatrixLayoutSetAttribute, l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                  sizeof stride);
  };
  layout(s.a, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb, g.stride_b, data_type(g.dtype));
  layout(s.b, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda, g.stride_a, data_type(g.dtype));
  layout(s.c, g.m, g.n, g.ldc, g.stride_c, g.out_fp32 ? CUDA_R_32F : data_type(g.dtype));
  plan.accumulate_ = g.accumulate;

  cublasLtMatmulPreference_t pref = nullptr;
  DMOE_LT_CHECK(api, cublasLtMatmulPreferenceCreate, &pref);
  const uint64_t workspace = kWorkspaceBytes;
  const char* call = "cublasLtMatmulPreferenceSetAttribute";
  cublasStatus_t status = api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                   &workspace, sizeof workspace);
  constexpr int kMaxAlgorithms = 8;
  if (algorithm < 0 || algorithm >= kMaxAlgorithms)
    throw InvalidArgument(fmt::format("Gemm: algorithm {} out of range [0, {})", algorithm, kMaxAlgorithms));
  cublasLtMatmulHeuristicResult_t results[kMaxAlgorithms]{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS) {
    call = "cublasLtMatmulAlgoGetHeuristic";
    status = api.cublasLtMatmulAlgoGetHeuristic(impl_->handle, s.desc, s.a, s.b, s.c, s.c, pref, algorithm + 1,
                                                results, &found);
  }
  (void)api.cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_SUCCESS) throw_status(api, call, status);
  if (found <= algorithm)
    throw std::runtime_error(fmt::format("cublasLtMatmulAlgoGetHeuristic: no algorithm #{} for m={} n={} k={} {}{} "
                                         "batch={} ({} found)", algorithm, g.m, g.n, g.k, g.trans_a ? 'T' : 'N',
                                         g.trans_b ? 'T' : 'N', g.batch, found));
  s.algo = results[algorithm].algo;
  s.workspace = results[algorithm].workspaceSize;
  return plan;
}

void CublasLt::run(const GemmPlan& plan, const void* a, const void* b, void* c, Stream stream) {
  if (!plan.state_) throw InvalidArgument("CublasLt::run: the plan is empty");
  const GemmPlan::State& s = *plan.state_;
  const float alpha = 1, beta = plan.accumulate_ ? 1.f : 0.f;
  device_.make_current();
  DMOE_LT_CHECK(impl_->api, cublasLtMatmul, impl_->handle, s.desc, &alpha, b, s.a, a, s.b, &beta, c, s.c, c, s.c,
                &s.algo, impl_->workspace.get(), s.workspace, stream);
}

}  // namespace dmoe

// Product benchmark: dmoe's block-sparse products against cuBLASLt and the GPU's ceilings, in one run.
//
// Problems: MegaBlocks' benchmark shapes (K = 1, uniform routing) × a layer's six products plus DDS NN/NT,
// and three modern layer shapes (K > 1) with uniform and Zipf-skewed routing × SDD NT, DSD NN, DSD TN.
// Per product: dmoe's kernel (default_spec), the cuBLASLt dense product with the same useful FLOPs and
// operand layouts, and cuBLASLt's per-expert strided-batched product (each expert padded to the largest
// one's rows, rounded up to the block, when routing is skewed). Times: median over 7 batches of
// back-to-back launches timed by CUDA events, after warm-up, rotating operand sets so that a rotation
// touches more than 2× L2. Compute-bound rows also get a paired ratio: dmoe and the fastest dense cuBLAS
// algorithm in alternating batches (PairedTiming). Speed of light: max(useful FLOPs / measured GEMM
// ceiling, minimum bytes / measured copy bandwidth), the minimum bytes reading each input once and writing
// each output once.
#include "product_bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "dmoe/cublaslt.hpp"
#include "dmoe/products.hpp"
#include "dmoe/reference.hpp"
#include "dmoe_commit.hpp"
#include "dmoe_version.hpp"
#include "bench_util.hpp"
#include "paired.hpp"

namespace dmoe::bench {
namespace {

constexpr int64_t kBlock = 128;
constexpr int kBatches = 7;
constexpr int kMaxSets = 8;
constexpr int64_t kMemoryCap = int64_t{40} << 30;  // operand bytes of one measurement, all sets
constexpr double kBatchTargetMs = 10;               // automatic --reps: batches of about this long
// Fallback when cuBLASLt cannot be loaded: ../shared/bench/h200-baselines.md (H200, cuBLAS bf16 8192³).
constexpr double kBaselineGemmFlopsPerSec = 794e12;

struct Product {
  const char* name;
  Op op;
  bool trans_a, trans_b;
  Epilogue epilogue = Epilogue::None;  // fused activation (forward: also writes the pre-activation) or its gradient
};

// Layer 1's products are layer 0's kernels with the roles swapped (h for x, w2 for w1); timed anyway.
// The fused rows are the layer's real forward SDD (activation applied, pre-activation kept) and backward
// SDD (dAct ⊙ act'(pre)).
constexpr Product kLayerProducts[] = {
    {"0::Fwd::SDD::NT", Op::SDD, false, true},   {"0::GradX::DSD::NN", Op::DSD, false, false},
    {"0::GradW::DSD::TN", Op::DSD, true, false}, {"1::Fwd::DSD::NN", Op::DSD, false, false},
    {"1::GradX::SDD::NT", Op::SDD, false, true}, {"1::GradW::DSD::TN", Op::DSD, true, false},
    {"DDS::NN", Op::DDS, false, false},          {"DDS::NT", Op::DDS, false, true},
    {"0::Fwd::SDD::NT+gelu", Op::SDD, false, true, Epilogue::GeluTanh},
    {"1::GradX::SDD::NT+dgelu", Op::SDD, false, true, Epilogue::GeluTanhGrad},
};
constexpr Product kModernProducts[] = {
    {"0::Fwd::SDD::NT", Op::SDD, false, true},
    {"0::GradX::DSD::NN", Op::DSD, false, false},
    {"0::GradW::DSD::TN", Op::DSD, true, false},
    {"0::Fwd::SDD::NT+silu", Op::SDD, false, true, Epilogue::Silu},
    {"1::GradX::SDD::NT+dsilu", Op::SDD, false, true, Epilogue::SiluGrad},
};
const std::span<const Product> kMegaBlocksSet{kLayerProducts};
const std::span<const Product> kForwardBackwardSet{kModernProducts};

// One layer shape and routing; its products share the topology.
struct Problem {
  int64_t tokens, hidden, ffn, experts, top_k;
  bool zipf;
  std::span<const Product> products;
  std::string label() const {
    return fmt::format("T={} H={} F={} E={} K={} {}", tokens, hidden, ffn, experts, top_k, zipf ? "zipf" : "uniform");
  }
  double useful_flops() const { return 2.0 * tokens * top_k * hidden * ffn; }
};

std::vector<Problem> problems(const ProductBenchOptions& opt) {
  std::vector<Problem> out;
  for (auto [t, h, f, e] : std::initializer_list<std::array<int64_t, 4>>{
           {65536, 512, 2048, 64}, {32768, 768, 3072, 64}, {8192, 1024, 4096, 64}, {8192, 4096, 16384, 4}})
    if (!opt.quick || h == 1024) out.push_back({t, h, f, e, 1, false, kMegaBlocksSet});  // quick: the fewest FLOPs
  if (opt.quick) return out;
  for (auto [t, h, f, e, k] : std::initializer_list<std::array<int64_t, 5>>{
           {16384, 4096, 14336, 8, 2}, {8192, 2048, 1408, 64, 6}, {16384, 7168, 2048, 256, 8}})
    for (bool zipf : {false, true}) out.push_back({t, h, f, e, k, zipf, kForwardBackwardSet});
  return out;
}


struct Timing {
  double ms = NAN;
  int reps = 0, sets = 0;
  int algo = -1;  // cuBLASLt: the heuristic candidate that was fastest
  std::string error;
};

// dmoe and a cuBLAS reference timed in alternating batches (paired.hpp), so both run in the same power
// and clock state.
struct PairedTiming {
  double a_ms = NAN, b_ms = NAN;  // medians of each side's batches
  double ratio = NAN;             // median over the pairs of b / a (a pair: two adjacent batches)
  int pairs = 0;
  std::string error;
};
constexpr int kPairs = 8;

// Bytes a row-major [rows, cols] operand with row stride ld spans over `batch` copies `stride` apart.
int64_t operand_bytes(int64_t rows, int64_t cols, int64_t ld, int32_t batch, int64_t stride) {
  return ((batch - 1) * stride + (rows - 1) * ld + cols) * 2;
}

std::array<int64_t, 3> gemm_bytes(const Gemm& g) {
  return {operand_bytes(g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda, g.batch, g.stride_a),
          operand_bytes(g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb, g.batch, g.stride_b),
          operand_bytes(g.m, g.n, g.ldc, g.batch, g.stride_c)};
}

// The cuBLAS product with the dmoe op's operand layouts over `rows` token rows in each of `batch`
// experts, their operands laid out as dmoe's are (experts' row blocks of the token-major operands, column
// blocks of the feature-major ones). batch = 1 with rows = T·K is the dense product with the same FLOPs.
Gemm reference_gemm(const Product& p, int64_t hidden, int64_t ffn, int64_t rows, int32_t batch) {
  const int64_t H = hidden, F = ffn, r = rows;
  if (p.op == Op::SDD)  // x [r, H] · w1ᵀ (w1 [F, H]) → [r, F]
    return {r, F, H, false, true, H, H, F, batch, r * H, F * H, r * F};
  if (p.op == Op::DSD && !p.trans_a)  // S [r, F] · w [F, H] → [r, H]
    return {r, H, F, false, false, F, H, H, batch, r * F, F * H, r * H};
  if (p.op == Op::DSD)  // Sᵀ (S [r, F]) · x [r, H] → [F, H]
    return {F, H, r, true, false, F, H, H, batch, r * F, r * H, F * H};
  if (!p.trans_b)  // A [H, E·r] · S [r, F] → C [H, E·F]
    return {H, F, r, false, false, r * batch, F, F * batch, batch, r, r * F, F};
  return {H, r, F, false, true, F * batch, F, r * batch, batch, F, r * F, r};  // A [H, E·F] · Sᵀ → C [H, E·r]
}

std::string first_line(std::string_view s) { return std::string(s.substr(0, s.find('\n'))); }

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += {'\\', c};
    else if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", int(c));
    else out += c;
  }
  return out + '"';
}

// One JSON object, fields in insertion order; NaN becomes null.
class Json {
 public:
  Json& number(std::string_view key, double v) {
    return raw(key, std::isfinite(v) ? fmt::format("{:.6g}", v) : "null");
  }
  Json& integer(std::string_view key, int64_t v) { return raw(key, fmt::format("{}", v)); }
  Json& text(std::string_view key, std::string_view v) { return raw(key, json_string(v)); }
  Json& boolean(std::string_view key, bool v) { return raw(key, v ? "true" : "false"); }
  std::string str() const { return s_ + "}"; }

 private:
  Json& raw(std::string_view key, const std::string& value) {
    s_ += fmt::format("{}{}: {}", s_.size() > 1 ? ", " : "", json_string(key), value);
    return *this;
  }
  std::string s_ = "{";
};

std::string cell(double v, int width, int precision) {
  return std::isfinite(v) ? fmt::format("{:>{}.{}f}", v, width, precision) : fmt::format("{:>{}}", "-", width);
}

class Bench {
 public:
  explicit Bench(const ProductBenchOptions& opt)
      : opt_(opt), stream_(dev_), seed_(std::random_device{}()) {
    try {
      lt_.emplace(dev_);
    } catch (const std::exception& e) {
      lt_error_ = e.what();
    }
  }

  int run();
  int router_gemms();
  Ceilings ceilings() {
    measure_ceilings();
    return {gemm_flops_per_sec_, copy_bytes_per_sec_, gemm_measured_};
  }

 private:
  void check_cublas();
  void measure_ceilings();
  void run_problem(const Problem&, Json fields);
  int batch_reps(double once_ms) const;
  Timing time_launches(int sets, const std::function<void(int)>& launch);
  Timing measure(std::array<int64_t, 3> bytes, const std::function<void(void* const*)>& launch);
  Timing cublas(const Gemm&);
  PairedTiming paired(std::array<int64_t, 3> a_bytes, const std::function<void(void* const*)>& a,
                      std::array<int64_t, 3> b_bytes, const std::function<void(void* const*)>& b);
  std::vector<DeviceBuffer> operand_sets(std::array<int64_t, 3> bytes, int& sets);

  const ProductBenchOptions& opt_;
  Device dev_{0};
  KernelCache cache_{dev_};
  OwnedStream stream_;
  std::optional<CublasLt> lt_;
  std::string lt_error_;
  uint64_t seed_;
  double gemm_flops_per_sec_ = NAN, copy_bytes_per_sec_ = NAN;
  bool gemm_measured_ = false;  // else the baseline stands in for the GEMM ceiling
  std::map<std::string, Timing> cublas_done_;  // identical GEMMs recur (layer 1, uniform vs zipf dense)
};

// Launches per timed batch: --reps, else enough for ~kBatchTargetMs given one launch's time.
int Bench::batch_reps(double once_ms) const {
  return opt_.reps > 0 ? opt_.reps
                       : int(std::clamp(std::ceil(kBatchTargetMs / std::max(once_ms, 1e-3)), 2.0, 200.0));
}

// Median per-launch time over kBatches batches; launch(i) enqueues one launch on operand set i. The
// first launch (compile, load, clocks) is not timed; the second sizes the batch when --reps is not given.
Timing Bench::time_launches(int sets, const std::function<void(int)>& launch) {
  const Stream s = stream_.get();
  EventTimer timer(dev_);
  launch(0);
  timer.start(s);
  launch(1 % sets);
  timer.stop(s);
  const double once = timer.elapsed_ms();
  Timing t;
  t.sets = sets;
  t.reps = batch_reps(once);
  std::vector<double> ms;
  int next = 2;
  for (int batch = 0; batch < kBatches; ++batch) {
    timer.start(s);
    for (int r = 0; r < t.reps; ++r) launch(next++ % sets);
    timer.stop(s);
    ms.push_back(timer.elapsed_ms() / t.reps);
  }
  t.ms = median(ms);
  return t;
}

// Allocates operand sets of {a, b, c} bytes (inputs a and b random, c the output), enough that one
// rotation touches over 2× L2 (at most kMaxSets and kMemoryCap), and times `launch` over them.
std::vector<DeviceBuffer> Bench::operand_sets(std::array<int64_t, 3> bytes, int& sets) {
  const int64_t set_bytes = bytes[0] + bytes[1] + bytes[2];
  if (set_bytes > kMemoryCap)
    throw std::runtime_error(fmt::format("one operand set needs {:.1f} GiB, over the {} GiB cap",
                                         set_bytes / double(1 << 30), kMemoryCap >> 30));
  sets = int(std::min<int64_t>({kMaxSets, 2 * dev_.properties().l2_bytes / set_bytes + 1, kMemoryCap / set_bytes}));
  std::vector<DeviceBuffer> buffers;
  for (int s = 0; s < sets; ++s)
    for (int i = 0; i < 3; ++i) {
      buffers.emplace_back(dev_, bytes[i]);
      if (i < 2) fill_random(dev_, buffers.back().get(), bytes[i], seed_ += uint64_t{1} << 40);
    }
  return buffers;
}

Timing Bench::measure(std::array<int64_t, 3> bytes, const std::function<void(void* const*)>& launch) {
  try {
    int sets = 0;
    std::vector<DeviceBuffer> buffers = operand_sets(bytes, sets);
    return time_launches(sets, [&](int s) {
      void* ops[3] = {buffers[3 * s].get(), buffers[3 * s + 1].get(), buffers[3 * s + 2].get()};
      launch(ops);
    });
  } catch (const std::exception& e) {
    return {.error = e.what()};
  }
}

PairedTiming Bench::paired(std::array<int64_t, 3> a_bytes, const std::function<void(void* const*)>& a,
                           std::array<int64_t, 3> b_bytes, const std::function<void(void* const*)>& b) {
  PairedTiming p;
  try {
    int a_sets = 0, b_sets = 0;
    std::vector<DeviceBuffer> a_bufs = operand_sets(a_bytes, a_sets);
    std::vector<DeviceBuffer> b_bufs = operand_sets(b_bytes, b_sets);
    const Stream s = stream_.get();
    EventTimer timer(dev_);
    struct Side {
      const std::function<void(void* const*)>& launch;
      std::vector<DeviceBuffer>& bufs;
      int sets, reps = 0, next = 0;
    } sides[2] = {{a, a_bufs, a_sets}, {b, b_bufs, b_sets}};
    auto run = [&](Side& d, int n) {
      for (int r = 0; r < n; ++r, ++d.next) {
        const int i = d.next % d.sets;
        void* ops[3] = {d.bufs[3 * i].get(), d.bufs[3 * i + 1].get(), d.bufs[3 * i + 2].get()};
        d.launch(ops);
      }
    };
    auto timed = [&](Side& d, int n) {  // ms per launch
      timer.start(s);
      run(d, n);
      timer.stop(s);
      return double(timer.elapsed_ms()) / n;
    };
    for (Side& d : sides) {  // warm-up, then one timed launch sizes the batch (as time_launches does)
      run(d, 1);
      d.reps = batch_reps(timed(d, 1));
    }
    const auto ms = alternate(kPairs, [&](int side) { return timed(sides[side], sides[side].reps); });
    p.a_ms = median(ms[0]), p.b_ms = median(ms[1]), p.pairs = kPairs;
    p.ratio = paired_ratio(ms[0], ms[1]);
  } catch (const std::exception& e) {
    p.error = e.what();
  }
  return p;
}

Timing Bench::cublas(const Gemm& g) {
  if (!lt_) return {.error = lt_error_};
  const std::string key = fmt::format("{} {} {} {:d}{:d} {} {} {} {} {} {} {}", g.m, g.n, g.k, g.trans_a, g.trans_b,
                                      g.lda, g.ldb, g.ldc, g.batch, g.stride_a, g.stride_b, g.stride_c);
  if (auto it = cublas_done_.find(key); it != cublas_done_.end()) return it->second;
  // The fastest of cuBLASLt's first kAlgorithms heuristic candidates: the reference is cuBLAS at its best.
  constexpr int kAlgorithms = 4;
  Timing best;
  for (int algo = 0; algo < kAlgorithms; ++algo) {
    Timing t;
    try {
      const GemmPlan plan = lt_->plan(g, algo);
      t = measure(gemm_bytes(g), [&](void* const* ops) { lt_->run(plan, ops[0], ops[1], ops[2], stream_.get()); });
    } catch (const std::exception& e) {
      t.error = e.what();
    }
    if (algo == 0 && !t.error.empty()) {
      best = t;  // the first choice failed: report why
      break;
    }
    if (!t.error.empty()) break;  // fewer candidates than kAlgorithms
    t.algo = algo;
    if (algo == 0 || t.ms < best.ms) best = t;
  }
  return cublas_done_[key] = best;
}

// cuBLASLt's row-major mapping checked once, in every layout, against the host on a small strided batch:
// a wrong transpose or stride would otherwise pass for a fast reference. Small integers keep it exact.
void Bench::check_cublas() {
  if (!lt_) return;
  try {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t m = 48, n = 40, k = 24, lda = (ta ? m : k) + 8, ldb = (tb ? k : n) + 8, ldc = n + 8;
        const Gemm g{m, n, k, ta, tb, lda, ldb, ldc, 3, (ta ? k : m) * lda + 16, (tb ? n : k) * ldb + 16, m * ldc + 16};
        const auto [a_bytes, b_bytes, c_bytes] = gemm_bytes(g);
        std::vector<uint16_t> a(a_bytes / 2), b(b_bytes / 2), c(c_bytes / 2);
        for (size_t i = 0; i < a.size(); ++i) a[i] = reference::to_bf16(float(int(i * 7 % 5) - 2));
        for (size_t i = 0; i < b.size(); ++i) b[i] = reference::to_bf16(float(int(i * 3 % 7) - 3));
        DeviceBuffer da(dev_, a_bytes), db(dev_, b_bytes), dc(dev_, c_bytes);
        dev_.copy_to_device(da.get(), a.data(), a_bytes);
        dev_.copy_to_device(db.get(), b.data(), b_bytes);
        dev_.fill_u8(dc.get(), 0xff, c_bytes);  // NaN: every output must be written
        lt_->run(lt_->plan(g), da.get(), db.get(), dc.get(), stream_.get());
        dev_.synchronize(stream_.get());
        dev_.copy_to_host(c.data(), dc.get(), c_bytes);
        for (int64_t batch = 0; batch < g.batch; ++batch)
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              float want = 0;
              for (int64_t p = 0; p < k; ++p)
                want += reference::from_bf16(a[batch * g.stride_a + (ta ? p * lda + i : i * lda + p)]) *
                        reference::from_bf16(b[batch * g.stride_b + (tb ? j * ldb + p : p * ldb + j)]);
              const float got = reference::from_bf16(c[batch * g.stride_c + i * ldc + j]);
              if (got != want)
                throw std::runtime_error(fmt::format("self-check failed: {}{} batch {} C[{}, {}] = {}, expected {}",
                                                     ta ? 'T' : 'N', tb ? 'T' : 'N', batch, i, j, got, want));
            }
      }
  } catch (const std::exception& e) {
    lt_error_ = fmt::format("cuBLASLt disabled: {}", e.what());
    lt_.reset();
  }
}

void Bench::measure_ceilings() {
  constexpr int64_t n = 8192, kCopyBytes = int64_t{2} << 30;
  const Timing gemm = cublas({n, n, n, false, false, n, n, n});
  gemm_measured_ = gemm.error.empty();
  if (gemm_measured_) gemm_flops_per_sec_ = 2.0 * n * n * n / (gemm.ms * 1e-3);
  DeviceBuffer src(dev_, kCopyBytes), dst(dev_, kCopyBytes);
  dev_.fill_u8(src.get(), 0x3c, kCopyBytes);  // a copy's speed does not depend on the values
  const Timing copy = time_launches(1, [&](int) {
    dev_.copy_device_to_device(dst.get(), src.get(), kCopyBytes, stream_.get());
  });
  copy_bytes_per_sec_ = 2.0 * kCopyBytes / (copy.ms * 1e-3);
  fmt::print("ceilings: cuBLASLt bf16 8192³ GEMM {}, device-to-device copy {:.2f} TB/s (read + write, 2 GiB)\n",
             gemm.error.empty() ? fmt::format("{:.0f} TFLOP/s", gemm_flops_per_sec_ / 1e12)
                                : fmt::format("failed ({}); SOL uses the H200 baseline {:.0f} TFLOP/s",
                                              first_line(gemm.error), kBaselineGemmFlopsPerSec / 1e12),
             copy_bytes_per_sec_ / 1e12);
  if (!gemm_measured_) gemm_flops_per_sec_ = kBaselineGemmFlopsPerSec;
}

void Bench::run_problem(const Problem& p, Json fields) {
  const std::vector<int64_t> counts = expert_counts(p.tokens, p.top_k, p.experts, p.zipf);
  const reference::HostTopology topo = reference::topology_from_counts(counts, kBlock, int32_t(p.ffn));
  const DeviceTopology device_topo(dev_, topo);
  const int64_t t_pad = topo.padded_rows(), rows = p.tokens * p.top_k;
  const auto [min_count, max_count] = std::minmax_element(counts.begin(), counts.end());
  // The per-expert reference pads every expert to the largest one (to the block, unless all are equal).
  const bool padded = *min_count != *max_count;
  const int64_t bmm_rows = padded ? (*max_count + kBlock - 1) / kBlock * kBlock : *max_count;
  const double bmm_flops = 2.0 * p.experts * bmm_rows * p.hidden * p.ffn;
  fmt::print("\n{}: T·K {}, T_pad {} (+{:.1f}% padding), tokens per expert {}…{}; "
             "cuBLAS per-expert: {} × {} rows{}\n",
             p.label(), rows, t_pad, 100.0 * (t_pad - rows) / rows, *min_count, *max_count, p.experts, bmm_rows,
             padded ? fmt::format(" (padded: {:.2f}× the useful FLOPs)", bmm_flops / p.useful_flops()) : "");
  fmt::print("  {:<18} {:>9} {:>8} {:>5} | {:>9} {:>8} {:>5} | {:>9} {:>8} {:>5} | {:>6}\n", "product", "dmoe ms",
             "TFLOP/s", "SOL", "dense ms", "TFLOP/s", "vs", "bmm ms", "TFLOP/s", "vs", "paired");

  MoeShape shape;
  shape.hidden = p.hidden, shape.ffn = p.ffn, shape.experts = p.experts, shape.top_k = p.top_k;
  shape.block = kBlock, shape.tokens = p.tokens, shape.dtype = DType::BF16;
  for (const Product& prod : p.products) {
    const std::string label = p.label() + " " + prod.name;
    if (!opt_.filter.empty() && label.find(opt_.filter) == std::string::npos) continue;

    // Operand bytes at T_pad: the sparse operand is its data [blocks, B, B], the dense ones whole.
    KernelSpec layout;
    layout.op = prod.op, layout.trans_a = prod.trans_a, layout.trans_b = prod.trans_b, layout.block = kBlock;
    layout.hidden = int32_t(p.hidden), layout.ffn = int32_t(p.ffn), layout.experts = int32_t(p.experts);
    const reference::ProductShapes s = reference::product_shapes(layout, topo, t_pad);
    const std::array<int64_t, 3> bytes = {
        reference::elements(layout, topo, s.a_rows, s.a_cols, prod.op == Op::DSD) * 2,
        reference::elements(layout, topo, s.b_rows, s.b_cols, prod.op == Op::DDS) * 2,
        reference::elements(layout, topo, s.c_rows, s.c_cols, prod.op == Op::SDD) * 2};
    // The epilogue's pre-activation (SDD's layout) is one more output or input: not rotated, and counted.
    const bool fused = prod.epilogue != Epilogue::None;
    const double min_bytes = double(bytes[0] + bytes[1] + bytes[2]) + (fused ? double(bytes[2]) : 0.0);
    const double flops_ms = p.useful_flops() / gemm_flops_per_sec_ * 1e3, bytes_ms = min_bytes / copy_bytes_per_sec_ * 1e3;
    const double sol_ms = std::max(flops_ms, bytes_ms);
    const bool compute_bound = flops_ms >= bytes_ms;

    std::string kernel;
    Timing dmoe;
    PairedTiming pair;
    const Gemm dense_gemm = reference_gemm(prod, p.hidden, p.ffn, rows, 1);
    try {
      KernelSpec spec = opt_.tuned ? tuned_spec(dev_, shape, prod.op, prod.trans_a, prod.trans_b, prod.epilogue)
                                   : default_spec(shape, prod.op, prod.trans_a, prod.trans_b,
                                                  device_arch(dev_.properties()), prod.epilogue);
      if (!opt_.schedule.empty() && spec.tile.mma == Mma::Wgmma) {
        const auto t = default_wgmma_tile(spec, opt_.schedule == "pingpong");
        if (!t) throw InvalidArgument(fmt::format("no {} wgmma tile fits {}", opt_.schedule, kernel_name(spec)));
        spec.tile = *t;
      }
      // The tile overrides apply where the product accepts them (column tiles that pair up; an epilogue
      // chunked staging serves; a cooperative activation SDD), else it keeps its tile.
      if (opt_.cluster > 0 && spec.tile.mma == Mma::Wgmma) {
        TileConfig t = spec.tile;
        t.cluster = static_cast<uint8_t>(opt_.cluster);
        spec = with_tile_if_valid(spec, t);
      }
      if (opt_.store_chunks >= 0 && spec.tile.mma == Mma::Wgmma) {
        TileConfig t = wgmma_tile(spec.tile.m, spec.tile.n, spec.tile.pingpong, spec.gated, opt_.store_chunks);
        t.group = spec.tile.group, t.cluster = spec.tile.cluster;
        spec = with_tile_if_valid(spec, t);
      }
      if (opt_.act_warps >= 0 && spec.tile.mma == Mma::Wgmma) {
        TileConfig t = spec.tile;
        t.act_warps = opt_.act_warps == 1;
        spec = with_tile_if_valid(spec, t);
      }
      DeviceBuffer row_map;
      if (opt_.gather && prod.op == Op::SDD && !prod.trans_a && spec.tile.mma == Mma::Wgmma) {
        // Real rows read a random permutation of the T·K rows (a routing's scattered tokens), padding −1.
        std::vector<int32_t> perm(static_cast<size_t>(rows)), map(static_cast<size_t>(t_pad), -1);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed_));
        int64_t start = 0, next = 0;
        for (int64_t n : counts) {
          for (int64_t j = 0; j < n; ++j) map[size_t(start + j)] = perm[size_t(next++)];
          start += (n + kBlock - 1) / kBlock * kBlock;
        }
        row_map = DeviceBuffer(dev_, map.size() * 4);
        dev_.copy_to_device(row_map.get(), map.data(), map.size() * 4);
        spec = with_gather(spec);
      }
      kernel = kernel_name(spec);
      DeviceBuffer aux;
      if (fused) {
        aux = DeviceBuffer(dev_, bytes[2]);
        fill_random(dev_, aux.get(), bytes[2], seed_ += uint64_t{1} << 40);
      }
      const auto launch_dmoe = [&](void* const* ops) {
        const ProductArgs args{ops[0], ops[1], ops[2], device_topo.view, topo.block_rows, aux.get(),
                               static_cast<const int32_t*>(row_map.get())};
        launch_product(cache_, spec, args, stream_.get());
      };
      dmoe = measure(bytes, launch_dmoe);
      // Where the ≥ 0.95× cuBLAS target applies (compute-bound), dmoe against cuBLAS's fastest candidate
      // once more, their batches alternating (PairedTiming).
      if (const Timing d = cublas(dense_gemm); compute_bound && dmoe.error.empty() && d.error.empty() && d.algo >= 0) {
        const GemmPlan plan = lt_->plan(dense_gemm, d.algo);
        pair = paired(bytes, launch_dmoe, gemm_bytes(dense_gemm), [&](void* const* ops) {
          lt_->run(plan, ops[0], ops[1], ops[2], stream_.get());
        });
      }
    } catch (const std::exception& e) {
      dmoe.error = e.what();
    }
    const Timing dense = cublas(dense_gemm);
    const Timing bmm = cublas(reference_gemm(prod, p.hidden, p.ffn, bmm_rows, int32_t(p.experts)));

    auto tflops = [&](const Timing& t) { return p.useful_flops() / (t.ms * 1e-3) / 1e12; };
    fmt::print("  {:<18} {} {} {} | {} {} {} | {} {} {} | {}\n", prod.name, cell(dmoe.ms, 9, 3),
               cell(tflops(dmoe), 8, 1), cell(sol_ms / dmoe.ms, 5, 2), cell(dense.ms, 9, 3), cell(tflops(dense), 8, 1),
               cell(dense.ms / dmoe.ms, 5, 2), cell(bmm.ms, 9, 3), cell(tflops(bmm), 8, 1),
               cell(bmm.ms / dmoe.ms, 5, 2), cell(pair.ratio, 6, 2));
    const struct {
      const char *who, *key;
      const Timing& t;
    } results[] = {{"dmoe", "dmoe_error", dmoe},
                   {"cuBLAS dense", "dense_error", dense},
                   {"cuBLAS per-expert", "bmm_error", bmm}};
    if (!pair.error.empty()) fmt::print("    paired timing failed: {}\n", first_line(pair.error));
    for (const auto& r : results)
      if (!r.t.error.empty()) fmt::print("    {} failed: {}\n", r.who, first_line(r.t.error));

    if (!opt_.json) continue;
    Json j = fields;
    j.text("problem", label).text("product", prod.name).text("op", to_string(prod.op))
        .text("trans", fmt::format("{}{}", prod.trans_a ? 'T' : 'N', prod.trans_b ? 'T' : 'N'))
        .integer("padded_rows", t_pad).integer("min_tokens_per_expert", *min_count)
        .integer("max_tokens_per_expert", *max_count).integer("useful_flops", int64_t(p.useful_flops()))
        .integer("min_bytes", int64_t(min_bytes)).number("sol_ms", sol_ms).text("kernel", kernel)
        .number("dmoe_ms", dmoe.ms).number("dmoe_tflops", tflops(dmoe)).number("sol_fraction", sol_ms / dmoe.ms)
        .integer("dmoe_reps", dmoe.reps).integer("dmoe_sets", dmoe.sets)
        .number("dense_ms", dense.ms).number("dense_tflops", tflops(dense)).number("vs_dense", dense.ms / dmoe.ms)
        .number("bmm_ms", bmm.ms).number("bmm_tflops", tflops(bmm)).number("vs_bmm", bmm.ms / dmoe.ms)
        .integer("bmm_rows_per_expert", bmm_rows).boolean("bmm_padded", padded).integer("bmm_flops", int64_t(bmm_flops))
        .integer("dense_algo", dense.algo);
    if (pair.pairs > 0)
      j.number("paired_dmoe_ms", pair.a_ms).number("paired_dense_ms", pair.b_ms).number("paired_vs_dense", pair.ratio)
          .integer("paired_pairs", pair.pairs);
    if (!pair.error.empty()) j.text("paired_error", pair.error);
    for (const auto& r : results)
      if (!r.t.error.empty()) j.text(r.key, r.t.error);
    fmt::print("{}\n", j.str());
  }
}

int Bench::run() {
  const DeviceProperties& props = dev_.properties();
  fmt::print("product benchmark on {} ({} SMs, L2 {} MiB, CUDA driver {}.{}), dmoe {} ({}), bf16, block {}\n",
             props.name, props.sm_count, props.l2_bytes >> 20, props.driver_version / 1000,
             props.driver_version % 1000 / 10, DMOE_VERSION, DMOE_COMMIT, kBlock);
  check_cublas();
  fmt::print("cuBLASLt: {}\n", lt_ ? fmt::format("{} (version {}), row-major mapping checked", lt_->library(),
                                                  lt_->version())
                                   : lt_error_);
  measure_ceilings();
  fmt::print("TFLOP/s count the useful 2·T·K·H·F FLOPs (no padding). SOL: speed-of-light time / dmoe time.\n"
             "vs: cuBLAS time / dmoe time (1.00: as fast as cuBLAS). dense: one product with the same useful FLOPs;\n"
             "bmm: cuBLAS strided-batched over the experts, each padded to the largest when routing is skewed.\n"
             "Every cuBLAS figure (ceiling included) is the fastest of cuBLASLt's first 4 heuristic algorithms.\n"
             "+gelu/+silu: the activation fused, pre-activation kept (one more output); +dgelu/+dsilu: the\n"
             "gradient fused, pre-activation read (one more input); both counted in the minimum bytes.\n"
             "paired (compute-bound rows): dmoe against that dense cuBLAS algorithm again, in alternating batches\n"
             "(A B B A ...), the median over 8 pairs of cuBLAS time / dmoe time: both in the same power state.\n");
  if (opt_.json) {
    Json header;
    header.text("type", "header").text("gpu", props.name).integer("sm_count", props.sm_count)
        .integer("l2_bytes", props.l2_bytes).integer("driver_version", props.driver_version)
        .text("cc", fmt::format("{}.{}", props.cc_major, props.cc_minor)).text("dmoe_version", DMOE_VERSION)
        .text("dmoe_commit", DMOE_COMMIT).text("cublaslt", lt_ ? lt_->library() : lt_error_)
        .integer("cublaslt_version", lt_ ? int64_t(lt_->version()) : 0)
        .number("gemm_ceiling_tflops", gemm_flops_per_sec_ / 1e12).boolean("gemm_ceiling_measured", gemm_measured_)
        .number("copy_ceiling_tbs", copy_bytes_per_sec_ / 1e12).integer("block", kBlock)
        .integer("reps", opt_.reps).number("zipf_s", kZipfS);
    fmt::print("{}\n", header.str());
  }
  for (const Problem& p : problems(opt_)) {
    const bool any = std::any_of(p.products.begin(), p.products.end(), [&](const Product& prod) {
      return opt_.filter.empty() || (p.label() + " " + prod.name).find(opt_.filter) != std::string::npos;
    });
    if (!any) continue;
    Json fields;  // repeated on each of the problem's lines, so that each line stands alone
    fields.text("type", "product").text("gpu", props.name).text("dmoe_commit", DMOE_COMMIT)
        .integer("tokens", p.tokens).integer("hidden", p.hidden).integer("ffn", p.ffn)
        .integer("experts", p.experts).integer("top_k", p.top_k).text("routing", p.zipf ? "zipf" : "uniform");
    try {
      run_problem(p, fields);
    } catch (const std::exception& e) {  // the topology or its upload: the problem's rows cannot run
      fmt::print("  {} failed: {}\n", p.label(), first_line(e.what()));
    }
  }
  return 0;
}

}  // namespace

// The layer's router GEMMs (dmoe::router_gemms, what runtime/layer.cpp plans: logits fp32 = x·Wrᵀ; dWr = dlogitsᵀ·x;
// dx += dlogits·Wr), every heuristic candidate up to 8, against the bytes' floor at the measured copy
// bandwidth: they move a few bytes per FLOP (N or K is E), so the floor is the bytes, and the layer takes
// the heuristic's first algorithm.
int Bench::router_gemms() {
  if (!lt_) throw std::runtime_error("router GEMMs need cuBLASLt: " + lt_error_);
  measure_ceilings();
  fmt::print("{:<14} {:<8} {:>4} {:>9} {:>9} {:>7} {:>9}\n", "preset", "gemm", "algo", "us", "floor us", "floor",
             "GB/s");
  for (const char* name : {"mb-46m", "mb-356m", "mixtral-8x7b", "fine-grained", "deepseek-v3"}) {
    if (!opt_.filter.empty() && std::string(name).find(opt_.filter) == std::string::npos) continue;
    const RouterGemms rg = dmoe::router_gemms(preset(name));  // the layer's own, at the preset's tokens
    struct Named {
      const char* name;
      const Gemm& g;
    };
    const Named gemms[3] = {{"logits", rg.logits}, {"dWr", rg.drouter}, {"dx+=", rg.dx}};
    for (const Named& n : gemms) {
      std::array<int64_t, 3> bytes = gemm_bytes(n.g);
      if (n.g.out_fp32) bytes[2] *= 2;
      const int64_t floor_bytes = bytes[0] + bytes[1] + bytes[2] * (n.g.accumulate ? 2 : 1);
      const double floor_us = floor_bytes / copy_bytes_per_sec_ * 1e6;
      for (int algo = 0; algo < 8; ++algo) {
        Timing t;
        try {
          const GemmPlan plan = lt_->plan(n.g, algo);
          t = measure(bytes, [&](void* const* ops) { lt_->run(plan, ops[0], ops[1], ops[2], stream_.get()); });
        } catch (const std::exception& e) {
          t.error = e.what();
        }
        if (!t.error.empty()) {
          if (algo == 0) fmt::print("{:<14} {:<8} {:>4} error: {}\n", name, n.name, algo, t.error);
          break;
        }
        fmt::print("{:<14} {:<8} {:>4} {:>9.1f} {:>9.1f} {:>7.2f} {:>9.0f}\n", name, n.name, algo, t.ms * 1e3,
                   floor_us, floor_us / (t.ms * 1e3), floor_bytes / (t.ms * 1e-3) / 1e9);
        if (opt_.json) {
          Json j;
          j.text("type", "router_gemm").text("preset", name).text("gemm", n.name).integer("algo", algo)
              .number("us", t.ms * 1e3).number("floor_us", floor_us).integer("floor_bytes", floor_bytes);
          fmt::print("{}\n", j.str());
        }
      }
    }
  }
  return 0;
}

int products(const ProductBenchOptions& opt) {
  Bench bench(opt);
  if (opt.router_gemms) return bench.router_gemms();
  return bench.run();
}

Ceilings measure_ceilings() {
  const ProductBenchOptions defaults;
  return Bench(defaults).ceilings();
}

}  // namespace dmoe::bench

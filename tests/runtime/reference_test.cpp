// The CPU references themselves: topology closed form against the generic construction and the
// semantics' oracles, the fp64 products against a dense product over the densified topology, the
// activations and the gated experts' elementwise ops.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "dmoe/reference.hpp"

using namespace dmoe;
using namespace dmoe::reference;

namespace {

std::mt19937_64 rng{std::random_device{}()};

std::vector<int64_t> random_counts(int experts, int max_count) {
  std::uniform_int_distribution<int> d(0, max_count);
  std::vector<int64_t> c(experts);
  for (auto& x : c) x = d(rng) % 3 == 0 ? 0 : d(rng);  // a third of the experts empty
  return c;
}

// Densified S mask: true where a block exists.
std::vector<bool> dense_mask(const HostTopology& t) {
  const int64_t cols = int64_t(t.experts) * t.ffn / t.block;
  std::vector<bool> m(int64_t(t.block_rows) * cols, false);
  for (int64_t i = 0; i < t.blocks(); ++i) m[int64_t(t.row_indices[i]) * cols + t.column_indices[i]] = true;
  return m;
}

}  // namespace

TEST_CASE("topology: closed form equals the generic sorted construction") {
  for (int trial = 0; trial < 50; ++trial) {
    const int experts = 1 + trial % 9;
    const int block = trial % 3 == 0 ? 64 : trial % 3 == 1 ? 128 : 256;
    const int ffn = block * (1 + trial % 4);
    const auto counts = random_counts(experts, 700);
    const HostTopology t = topology_from_counts(counts, block, ffn);
    const HostTopology s = with_sorted_transpose(t);
    CHECK(t.column_indices_t == s.column_indices_t);
    CHECK(t.offsets_t == s.offsets_t);
    CHECK(t.block_offsets_t == s.block_offsets_t);
  }
}

TEST_CASE("topology: the semantics' oracles") {
  const std::vector<int64_t> counts = {130, 0, 257, 64, 0, 1};
  const int block = 128, ffn = 256, fb = ffn / block;
  const HostTopology t = topology_from_counts(counts, block, ffn);
  int64_t padded = 0;
  for (auto c : counts) padded += (c + block - 1) / block * block;
  CHECK(t.padded_rows() == padded);
  CHECK(t.padded_rows() % block == 0);
  CHECK(t.blocks() == int64_t(t.block_rows) * fb);
  for (int r = 0; r <= t.block_rows; ++r) CHECK(t.offsets[r] == r * fb);
  // Densified, the topology is the block-diagonal expert mask.
  const auto mask = dense_mask(t);
  const int64_t cols = int64_t(counts.size()) * fb;
  int row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int rows = int((counts[e] + block - 1) / block);
    for (int r = row; r < row + rows; ++r)
      for (int64_t c = 0; c < cols; ++c) CHECK(mask[r * cols + c] == (c / fb == int64_t(e)));
    row += rows;
  }
  // Empty experts have empty block columns.
  for (int j = 0; j < fb; ++j) {
    CHECK(t.offsets_t[1 * fb + j + 1] == t.offsets_t[1 * fb + j]);
    CHECK(t.offsets_t[4 * fb + j + 1] == t.offsets_t[4 * fb + j]);
  }
}

TEST_CASE("topology: sizes that overflow 32 bits are refused") {
  const std::vector<int64_t> counts = {int64_t{1} << 31, 5};
  CHECK_THROWS_AS(topology_from_counts(counts, 128, 128), InvalidArgument);
  CHECK_THROWS_AS(topology_from_counts(std::vector<int64_t>{-1}, 128, 128), InvalidArgument);
}

TEST_CASE("reference products equal a dense product over the densified topology") {
  const std::vector<int64_t> counts = {70, 0, 130};
  // B 128: a block spans two of the reference's 64-row (column) work items.
  for (const int block : {64, 128}) {
    const int ffn = 2 * block, hidden = 64;
    INFO("block " << block);
    const HostTopology t = topology_from_counts(counts, block, ffn);
    const int64_t capacity = t.padded_rows() + block;  // one spare block row
    const int64_t T = t.padded_rows(), FE = int64_t(counts.size()) * ffn, H = hidden;
    const auto mask = dense_mask(t);
    std::uniform_real_distribution<float> d(-1, 1);
    for (Op op : {Op::SDD, Op::DSD, Op::DDS})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          KernelSpec k;
          k.op = op, k.trans_a = ta, k.trans_b = tb, k.block = block, k.hidden = hidden, k.ffn = ffn;
          k.experts = int32_t(counts.size());
          INFO(int(op) << ta << tb);
          const ProductShapes s = product_shapes(k, t, capacity);
          const bool as = op == Op::DSD, bs = op == Op::DDS;
          std::vector<float> a(as ? t.blocks() * block * block : s.a_rows * s.a_cols);
          std::vector<float> b(bs ? t.blocks() * block * block : s.b_rows * s.b_cols);
          for (auto& x : a) x = d(rng);
          for (auto& x : b) x = d(rng);
          const auto out = product(k, t, capacity, a, b);
          // Dense S [T, FE] from the blocks; dense operand element accessors.
          auto S = [&](const std::vector<float>& data, int64_t i, int64_t j) -> double {
            const int64_t cols = FE / block;
            if (!mask[(i / block) * cols + j / block]) return 0;
            const int64_t blk = (i / block) * (ffn / block) + (j / block) % (ffn / block);  // row's k-th block
            return data[(blk * block + i % block) * block + j % block];
          };
          auto D = [](const std::vector<float>& x, int64_t cols, bool tr, int64_t i, int64_t j) -> double {
            return tr ? x[j * cols + i] : x[i * cols + j];
          };
          double max_diff = 0;
          if (op == Op::SDD) {
            for (int64_t blk = 0; blk < t.blocks(); ++blk)
              for (int i = 0; i < block; ++i)
                for (int j = 0; j < block; ++j) {
                  const int64_t r = int64_t(t.row_indices[blk]) * block + i, c = int64_t(t.column_indices[blk]) * block + j;
                  double ref = 0;
                  for (int64_t kk = 0; kk < H; ++kk) ref += D(a, s.a_cols, ta, r, kk) * D(b, s.b_cols, tb, kk, c);
                  max_diff = std::max(max_diff, std::abs(ref - out[(blk * block + i) * block + j]));
                }
          } else {
            for (int64_t i = 0; i < s.c_rows; ++i)
              for (int64_t j = 0; j < s.c_cols; ++j) {
                double ref = 0;
                if (op == Op::DSD) {
                  const int64_t K = ta ? T : FE;
                  if (!ta && i >= T) continue;
                  for (int64_t kk = 0; kk < K; ++kk)
                    ref += (ta ? S(a, kk, i) : S(a, i, kk)) * D(b, s.b_cols, tb, kk, j);
                } else {
                  const int64_t K = tb ? FE : T;
                  if (tb && j >= T) continue;
                  for (int64_t kk = 0; kk < K; ++kk)
                    ref += D(a, s.a_cols, ta, i, kk) * (tb ? S(b, j, kk) : S(b, kk, j));
                }
                max_diff = std::max(max_diff, std::abs(ref - out[i * s.c_cols + j]));
              }
          }
          CHECK(max_diff < 1e-9);
        }
  }
}

TEST_CASE("16-bit conversions round to nearest even") {
  CHECK(to_bf16(1.0f) == 0x3f80);
  CHECK(from_bf16(0x3f80) == 1.0f);
  CHECK(to_bf16(1.00390625f) == 0x3f80);  // exactly half an ulp above 1: ties to even (down)
  CHECK(to_bf16(1.01171875f) == 0x3f82);  // 1.5 ulps: ties to even (up)
  CHECK(std::isnan(from_bf16(to_bf16(NAN))));
  CHECK(to_fp16(1.0f) == 0x3c00);
  CHECK(from_fp16(0x3c00) == 1.0f);
  CHECK(from_fp16(to_fp16(0.1f)) == doctest::Approx(0.1f).epsilon(1e-3));
}

TEST_CASE("relative error: NaN never passes") {
  const std::vector<double> ref = {1, 2, 3};
  CHECK(relative_error(ref, std::vector<double>{1, 2, 3}) == 0);
  CHECK(relative_error(ref, std::vector<double>{1, NAN, 3}) == INFINITY);
  CHECK(relative_error(ref, std::vector<double>{1, 2, 3.03}) == doctest::Approx(0.03 / std::sqrt(14.0)));
}

TEST_CASE("activation derivatives match central finite differences") {
  for (Epilogue e : {Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu}) {
    for (double x : {-3.1, -1.0, -0.37, 0.25, 0.9, 2.7}) {
      const double h = 1e-6;
      const double fd = (reference::activation(e, x + h) - reference::activation(e, x - h)) / (2 * h);
      INFO(to_string(e) << " at " << x);
      CHECK(reference::activation_grad(e, x) == doctest::Approx(fd).epsilon(1e-6));
    }
  }
  CHECK(reference::activation(Epilogue::GeluTanh, 1.0) == doctest::Approx(0.8411919906));  // tanh-GELU(1)
  CHECK(reference::activation(Epilogue::Silu, 1.0) == doctest::Approx(0.7310585786));
}

TEST_CASE("glu and glu_grad: the definition, and the gradient of ⟨dh, h⟩ by finite differences") {
  std::uniform_real_distribution<float> d(-2.f, 2.f);
  const int64_t n = 64;
  std::vector<float> a(n), g(n), dh(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = d(rng), g[i] = d(rng), dh[i] = d(rng);
    if (std::abs(a[i]) < 0.01f) a[i] = 0.5f;  // away from ReLU's kink, which a difference would straddle
  }
  for (Epilogue e : {Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu}) {
    INFO(to_string(e));
    const auto h = glu(e, a, g);
    const GluGrad r = glu_grad(e, dh, a, g);
    REQUIRE(h.size() == size_t(n));
    REQUIRE(r.da.size() == size_t(n));
    REQUIRE(r.dg.size() == size_t(n));
    // L = ⟨dh, glu(a, g)⟩: ∂L/∂a[i] and ∂L/∂g[i] by central differences of the reference itself.
    auto loss = [&](const std::vector<float>& aa, const std::vector<float>& gg) {
      const auto hh = glu(e, aa, gg);
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += double(dh[i]) * hh[i];
      return l;
    };
    const float eps = 1.f / 1024;  // exact in fp32, so a ± eps is what the difference divides by
    for (int64_t i = 0; i < n; ++i) {
      CHECK(h[i] == activation(e, a[i]) * double(g[i]));
      std::vector<float> ap = a, am = a, gp = g, gm = g;
      ap[i] += eps, am[i] -= eps, gp[i] += eps, gm[i] -= eps;
      const double fa = (loss(ap, g) - loss(am, g)) / (double(ap[i]) - double(am[i]));
      const double fg = (loss(a, gp) - loss(a, gm)) / (double(gp[i]) - double(gm[i]));
      INFO("a = " << a[i] << ", g = " << g[i]);
      CHECK(r.da[i] == doctest::Approx(fa).epsilon(1e-5).scale(1.0));
      CHECK(r.dg[i] == doctest::Approx(fg).epsilon(1e-9).scale(1.0));
    }
  }
  CHECK_THROWS_WITH_AS(glu(Epilogue::SiluGrad, a, g), doctest::Contains("not dsilu"), InvalidArgument);
  CHECK_THROWS_WITH_AS(glu_grad(Epilogue::Silu, dh, a, std::vector<float>(3)), doctest::Contains("g has 3 elements"),
                       InvalidArgument);
}

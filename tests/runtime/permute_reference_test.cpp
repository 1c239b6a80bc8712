// The CPU references of the permutation, padded gather, padded scatter and the scatter's backward
// (routing_reference.hpp) against the semantics' oracles (dmoe-semantics.md, "Test oracles").
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "dmoe/routing_reference.hpp"
#include "dmoe/spec.hpp"

using namespace dmoe;
using namespace dmoe::reference;

namespace {

std::mt19937_64 rng{std::random_device{}()};

enum class Kind { Uniform, Zipf, OneExpert, SomeEmpty };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Uniform: return "uniform";
    case Kind::Zipf: return "zipf";
    case Kind::OneExpert: return "one-expert";
    case Kind::SomeEmpty: return "some-empty";
  }
  return "?";
}

// T·K expert ids, K distinct experts per token (as top-k gives), drawn by the routing kind's
// distribution over experts, without replacement.
std::vector<int32_t> make_routing(Kind kind, int64_t tokens, int experts, int top_k) {
  std::vector<double> p(experts, 1.0);
  if (kind == Kind::Zipf)
    for (int e = 0; e < experts; ++e) p[e] = 1.0 / std::pow(e + 1.0, 1.2);
  if (kind == Kind::OneExpert)  // all tokens to the same K experts (one when K = 1), in the middle
    for (int e = 0; e < experts; ++e) p[e] = (e >= experts / 2 && e < experts / 2 + top_k) ? 1.0 : 0.0;
  if (kind == Kind::SomeEmpty)  // every third expert empty, while enough remain for K distinct choices
    for (int e = 0, empty = 0; e < experts && experts - empty > top_k; e += 3, ++empty) p[e] = 0.0;
  std::vector<int32_t> ids(tokens * top_k);
  std::vector<double> q(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    q = p;
    for (int k = 0; k < top_k; ++k) {
      std::discrete_distribution<int> d(q.begin(), q.end());
      const int e = d(rng);
      ids[t * top_k + k] = e;
      q[e] = 0.0;
    }
  }
  return ids;
}

std::vector<float> random_values(int64_t n) {
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = d(rng);
    if (x == 0.f) x = 0.5f;
  }
  return v;
}

std::vector<double> random_weights(int64_t n) {
  std::uniform_real_distribution<double> d(0.05, 1.0);
  std::vector<double> w(n);
  for (auto& x : w) x = d(rng);
  return w;
}

// The permutation's own invariants: oracle 1, stability, the padded layout.
void check_permutation(const Permutation& p, const std::vector<int32_t>& ids, int experts, int top_k, int block) {
  const int64_t n = static_cast<int64_t>(ids.size());
  REQUIRE(static_cast<int64_t>(p.indices.size()) == n);
  REQUIRE(static_cast<int64_t>(p.bin_ids.size()) == n);
  REQUIRE(static_cast<int64_t>(p.rows.size()) == n);
  REQUIRE(static_cast<int>(p.counts.size()) == experts);

  // Every assignment appears exactly once.
  std::vector<int> seen(n, 0);
  for (int32_t i : p.indices) {
    REQUIRE(i >= 0);
    REQUIRE(i < n);
    ++seen[i];
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));

  // Σ counts = T·K; counts are the histogram; bins and padded_bins are the inclusive cumsums.
  CHECK(std::accumulate(p.counts.begin(), p.counts.end(), int64_t{0}) == n);
  std::vector<int64_t> hist(experts, 0);
  for (int32_t e : ids) ++hist[e];
  CHECK(hist == p.counts);
  int64_t sum = 0, padded = 0;
  for (int e = 0; e < experts; ++e) {
    sum += p.counts[e];
    padded += (p.counts[e] + block - 1) / block * block;
    CHECK(p.bins[e] == sum);
    CHECK(p.padded_bins[e] == padded);
  }
  CHECK(p.padded_rows == padded);
  CHECK(p.padded_rows % block == 0);
  CHECK(p.padded_rows >= n);
  CHECK(p.padded_rows <= n + int64_t(block - 1) * experts);
  (void)top_k;

  // Sorted by expert, and stable: equal experts keep assignment order.
  int64_t unsorted = 0, unstable = 0, wrong_bin = 0;
  for (int64_t q = 0; q < n; ++q) {
    wrong_bin += p.bin_ids[q] != ids[p.indices[q]];
    if (q > 0) {
      unsorted += p.bin_ids[q] < p.bin_ids[q - 1];
      unstable += p.bin_ids[q] == p.bin_ids[q - 1] && p.indices[q] <= p.indices[q - 1];
    }
  }
  CHECK(wrong_bin == 0);
  CHECK(unsorted == 0);
  CHECK(unstable == 0);

  // rows: assignment at sorted position bins_start_e + j sits at padded row padded_start_e + j.
  int64_t bad_rows = 0;
  for (int64_t q = 0; q < n; ++q) {
    const int e = p.bin_ids[q];
    const int64_t j = q - (e ? p.bins[e - 1] : 0);
    bad_rows += j < 0 || j >= p.counts[e] || p.rows[p.indices[q]] != (e ? p.padded_bins[e - 1] : 0) + j;
  }
  CHECK(bad_rows == 0);
}

struct Routing {
  Kind kind;
  int64_t tokens;
  int experts, top_k, block;
};

std::string describe(const Routing& r) {
  return std::string(kind_name(r.kind)) + " T=" + std::to_string(r.tokens) + " E=" + std::to_string(r.experts) +
         " K=" + std::to_string(r.top_k) + " B=" + std::to_string(r.block);
}

// The kinds the semantics asks for, T often off the block multiple and off the chunk of 256 tokens.
std::vector<Routing> routings() {
  std::vector<Routing> rs;
  for (Kind kind : {Kind::Uniform, Kind::Zipf, Kind::OneExpert, Kind::SomeEmpty})
    for (int block : {64, 128, 256}) {
      rs.push_back({kind, 1000, 8, 2, block});
      rs.push_back({kind, 777, 64, 6, block});
      rs.push_back({kind, 300, 16, 1, block});
    }
  rs.push_back({Kind::Uniform, 513, 1, 1, 128});   // E = 1
  rs.push_back({Kind::Uniform, 257, 4, 4, 64});    // K = E
  rs.push_back({Kind::Zipf, 129, 8, 8, 128});      // K = E
  rs.push_back({Kind::Uniform, 1, 8, 2, 128});     // a single token
  rs.push_back({Kind::Uniform, 0, 8, 2, 128});     // no tokens at all
  rs.push_back({Kind::Zipf, 3000, 256, 8, 128});   // many experts, several empty
  return rs;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  } catch (...) {
    return "<not InvalidArgument>";
  }
  return "<no throw>";
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("permute: every assignment once, counts, stability, padded layout") {
  for (const Routing& r : routings()) {
    INFO(describe(r));
    const auto ids = make_routing(r.kind, r.tokens, r.experts, r.top_k);
    const Permutation p = permute(ids, r.experts, r.top_k, r.block);
    check_permutation(p, ids, r.experts, r.top_k, r.block);
    if (r.kind == Kind::OneExpert && r.top_k == 1 && r.tokens > 0)
      CHECK(std::count(p.counts.begin(), p.counts.end(), 0) == r.experts - 1);
    if (r.kind == Kind::SomeEmpty && r.experts > r.top_k)
      CHECK(std::count(p.counts.begin(), p.counts.end(), 0) > 0);
  }
}

TEST_CASE("permute: stability on a hand-made routing") {
  // T = 4, K = 2: assignments 0..7 to experts 2,0 | 0,2 | 1,0 | 2,1.
  const std::vector<int32_t> ids = {2, 0, 0, 2, 1, 0, 2, 1};
  const Permutation p = permute(ids, 4, 2, 64);
  CHECK(p.indices == std::vector<int32_t>{1, 2, 5, 4, 7, 0, 3, 6});
  CHECK(p.bin_ids == std::vector<int32_t>{0, 0, 0, 1, 1, 2, 2, 2});
  CHECK(p.counts == std::vector<int64_t>{3, 2, 3, 0});
  CHECK(p.bins == std::vector<int64_t>{3, 5, 8, 8});
  CHECK(p.padded_bins == std::vector<int64_t>{64, 128, 192, 192});
  CHECK(p.padded_rows == 192);
  CHECK(p.rows == std::vector<int32_t>{128, 0, 1, 129, 64, 2, 130, 65});
}

TEST_CASE("gather: real rows copy their token, padding rows are exactly zero") {
  for (const Routing& r : routings()) {
    INFO(describe(r));
    const int H = 8;
    const auto ids = make_routing(r.kind, r.tokens, r.experts, r.top_k);
    const Permutation p = permute(ids, r.experts, r.top_k, r.block);
    const auto x = random_values(r.tokens * H);
    const auto y = gather(x, p, r.top_k, H);
    REQUIRE(static_cast<int64_t>(y.size()) == p.padded_rows * H);
    std::vector<bool> real(p.padded_rows, false);
    int64_t wrong = 0;
    for (int64_t i = 0; i < r.tokens * r.top_k; ++i) {
      real[p.rows[i]] = true;
      for (int h = 0; h < H; ++h) wrong += y[int64_t(p.rows[i]) * H + h] != double(x[i / r.top_k * H + h]);
    }
    CHECK(wrong == 0);
    int64_t nonzero_padding = 0, padding = 0;
    for (int64_t row = 0; row < p.padded_rows; ++row) {
      if (real[row]) continue;
      ++padding;
      for (int h = 0; h < H; ++h) nonzero_padding += y[row * H + h] != 0.0;
    }
    CHECK(nonzero_padding == 0);
    CHECK(padding == p.padded_rows - r.tokens * r.top_k);
    // Padding rows are exactly the tail of each expert's range.
    for (int e = 0; e < r.experts; ++e) {
      const int64_t start = e ? p.padded_bins[e - 1] : 0;
      for (int64_t row = start; row < p.padded_bins[e]; ++row) CHECK(real[row] == (row - start < p.counts[e]));
    }
  }
}

TEST_CASE("scatter: inverse of gather, weighted and unweighted") {
  for (const Routing& r : routings()) {
    INFO(describe(r));
    const int H = 16, K = r.top_k;
    const int64_t T = r.tokens;
    const auto ids = make_routing(r.kind, T, r.experts, K);
    const Permutation p = permute(ids, r.experts, K, r.block);
    const auto x = random_values(T * H);
    const auto g = gather(x, p, K, H);
    const std::vector<float> gf(g.begin(), g.end());

    // Unweighted: y = K · x (gather's backward of a ones gradient).
    const auto y = scatter(gf, p, {}, T, K, H);
    REQUIRE(static_cast<int64_t>(y.size()) == T * H);
    double worst = 0;
    for (int64_t e = 0; e < T * H; ++e) worst = std::max(worst, std::abs(y[e] - K * double(x[e])));
    CHECK(worst == 0.0);

    // Weighted: y[t] = (Σ_k w[t, k]) · x[t].
    const auto w = random_weights(T * K);
    const auto yw = scatter(gf, p, w, T, K, H);
    worst = 0;
    for (int64_t t = 0; t < T; ++t) {
      double ws = 0;
      for (int k = 0; k < K; ++k) ws += w[t * K + k];
      for (int h = 0; h < H; ++h) worst = std::max(worst, std::abs(yw[t * H + h] - ws * x[t * H + h]));
    }
    CHECK(worst < 1e-12);

    // Arbitrary rows (padding rows included, which must not contribute): the direct definition.
    const auto rows = random_values(p.padded_rows * H);
    const auto ya = scatter(rows, p, w, T, K, H);
    worst = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        double ref = 0;
        for (int k = 0; k < K; ++k) ref += w[t * K + k] * rows[int64_t(p.rows[t * K + k]) * H + h];
        worst = std::max(worst, std::abs(ya[t * H + h] - ref));
      }
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("scatter: a buffer of the padded-row capacity is accepted; rows past T_pad are ignored") {
  const int H = 8, K = 2, E = 4, B = 64;
  const int64_t T = 100;
  const auto ids = make_routing(Kind::Uniform, T, E, K);
  const Permutation p = permute(ids, E, K, B);
  auto rows = random_values((p.padded_rows + 3 * B) * H);
  const auto w = random_weights(T * K);
  const auto y1 = scatter(rows, p, w, T, K, H);
  for (int64_t e = p.padded_rows * H; e < int64_t(rows.size()); ++e) rows[e] = 1e30f;
  const auto y2 = scatter(rows, p, w, T, K, H);
  CHECK(y1 == y2);
}

TEST_CASE("scatter: a second source is added to every row (the gated experts' dX)") {
  for (const Routing& r : routings()) {
    INFO(describe(r));
    const int H = 8, K = r.top_k;
    const int64_t T = r.tokens;
    const auto ids = make_routing(r.kind, T, r.experts, K);
    const Permutation p = permute(ids, r.experts, K, r.block);
    const auto rows = random_values(p.padded_rows * H), rows2 = random_values(p.padded_rows * H);
    const auto w = random_weights(T * K);
    for (bool weighted : {false, true}) {
      const std::span<const double> ws = weighted ? std::span<const double>(w) : std::span<const double>{};
      const auto y = scatter(rows, p, ws, T, K, H, rows2);
      const auto y1 = scatter(rows, p, ws, T, K, H), y2 = scatter(rows2, p, ws, T, K, H);
      double worst = 0;
      for (int64_t e = 0; e < T * H; ++e) worst = std::max(worst, std::abs(y[e] - (y1[e] + y2[e])));
      CHECK(worst < 1e-12);
    }
  }
  const auto ids = make_routing(Kind::Uniform, 10, 4, 2);
  const Permutation p = permute(ids, 4, 2, 64);
  const auto rows = random_values(p.padded_rows * 8);
  CHECK_THROWS_WITH_AS(scatter(rows, p, {}, 10, 2, 8, std::vector<float>(7)),
                       doctest::Contains("rows2 has 7 elements"), InvalidArgument);
}

TEST_CASE("scatter_grad: the adjoint of scatter, and finite differences of the weights") {
  for (const Routing& r : routings()) {
    INFO(describe(r));
    const int H = 16, K = r.top_k;
    const int64_t T = r.tokens;
    const auto ids = make_routing(r.kind, T, r.experts, K);
    const Permutation p = permute(ids, r.experts, K, r.block);
    const auto rows = random_values(p.padded_rows * H);
    const auto dy = random_values(T * H);
    const auto w = random_weights(T * K);
    const ScatterGrad g = scatter_grad(dy, rows, p, w, T, K, H);
    REQUIRE(static_cast<int64_t>(g.d_rows.size()) == p.padded_rows * H);
    REQUIRE(static_cast<int64_t>(g.dw.size()) == T * K);

    // L(rows, w) = ⟨dy, scatter(rows, w)⟩ is linear in rows and in w separately:
    // L = ⟨d_rows, rows⟩ = Σ_i w_i · dw_i.
    auto loss = [&](std::span<const float> rw, std::span<const double> ww) {
      const auto y = scatter(rw, p, ww, T, K, H);
      double l = 0;
      for (int64_t e = 0; e < T * H; ++e) l += y[e] * dy[e];
      return l;
    };
    const double L = loss(rows, w);
    double via_rows = 0, via_w = 0;
    for (int64_t e = 0; e < p.padded_rows * H; ++e) via_rows += g.d_rows[e] * rows[e];
    for (int64_t i = 0; i < T * K; ++i) via_w += w[i] * g.dw[i];
    const double scale = 1 + std::abs(L);
    CHECK(std::abs(via_rows - L) < 1e-9 * scale);
    CHECK(std::abs(via_w - L) < 1e-9 * scale);

    // The adjoint against any other rows: ⟨d_rows, R⟩ = ⟨dy, scatter(R, w)⟩, padding rows included.
    const auto other = random_values(p.padded_rows * H);
    double adj = 0;
    for (int64_t e = 0; e < p.padded_rows * H; ++e) adj += g.d_rows[e] * other[e];
    const double L2 = loss(other, w);
    CHECK(std::abs(adj - L2) < 1e-9 * (1 + std::abs(L2)));

    // Central differences of a few weights.
    std::uniform_int_distribution<int64_t> pick(0, std::max<int64_t>(T * K - 1, 0));
    for (int trial = 0; trial < 5 && T > 0; ++trial) {
      const int64_t i = pick(rng);
      const double eps = 1e-3;
      auto wp = w, wm = w;
      wp[i] += eps;
      wm[i] -= eps;
      const double fd = (loss(rows, wp) - loss(rows, wm)) / (2 * eps);
      CHECK(std::abs(fd - g.dw[i]) < 1e-8 * (1 + std::abs(g.dw[i])));
    }

    // Padding rows get no gradient; real rows get dy[t] · w.
    std::vector<bool> real(p.padded_rows, false);
    for (int32_t row : p.rows) real[row] = true;
    int64_t bad = 0;
    for (int64_t row = 0; row < p.padded_rows; ++row)
      if (!real[row])
        for (int h = 0; h < H; ++h) bad += g.d_rows[row * H + h] != 0.0;
    for (int64_t i = 0; i < T * K; ++i)
      for (int h = 0; h < H; ++h) bad += g.d_rows[int64_t(p.rows[i]) * H + h] != double(dy[i / K * H + h]) * w[i];
    CHECK(bad == 0);
  }
}

TEST_CASE("scatter_grad: without weights the row gradient is the gather of dy") {
  const int H = 8, K = 3, E = 5, B = 64;
  const int64_t T = 200;
  const auto ids = make_routing(Kind::Zipf, T, E, K);
  const Permutation p = permute(ids, E, K, B);
  const auto rows = random_values(p.padded_rows * H);
  const auto dy = random_values(T * H);
  const ScatterGrad g = scatter_grad(dy, rows, p, {}, T, K, H);
  CHECK(g.d_rows == gather(dy, p, K, H));
}

TEST_CASE("permutation references: bad inputs name the value and the limit") {
  const std::vector<int32_t> ids = {0, 1, 2, 3};
  {
    const auto bad = std::vector<int32_t>{0, 4, 1, 2};
    const std::string m = error_of([&] { permute(bad, 4, 2, 64); });
    INFO(m);
    CHECK(contains(m, "expert id 4"));
    CHECK(contains(m, "[0, 4)"));
  }
  {
    const auto bad = std::vector<int32_t>{0, 1, -1, 2};
    const std::string m = error_of([&] { permute(bad, 4, 2, 64); });
    INFO(m);
    CHECK(contains(m, "expert id -1"));
    CHECK(contains(m, "[0, 4)"));
  }
  {
    const std::string m = error_of([&] { permute(std::vector<int32_t>{0, 1, 2}, 4, 2, 64); });
    INFO(m);
    CHECK(contains(m, "3 elements"));
    CHECK(contains(m, "top_k = 2"));
  }
  CHECK(contains(error_of([&] { permute(ids, 0, 1, 64); }), "experts must be positive, got 0"));
  CHECK(contains(error_of([&] { permute(ids, 4, 0, 64); }), "top_k must be positive, got 0"));
  CHECK(contains(error_of([&] { permute(ids, 4, 1, 0); }), "block must be positive, got 0"));
  {
    // Three non-empty experts of a 2^30 block: 3·2^30 padded rows overflow int32.
    const std::string m = error_of([&] { permute(ids, 4, 1, 1 << 30); });
    INFO(m);
    CHECK(contains(m, "overflow"));
    CHECK(contains(m, std::to_string(std::numeric_limits<int32_t>::max())));
    CHECK(contains(m, std::to_string(int64_t{2} << 30)));
  }

  const Permutation p = permute(ids, 4, 2, 64);  // T = 2
  const int H = 8;
  const auto x = random_values(2 * H);
  {
    const std::string m = error_of([&] { gather(random_values(3 * H), p, 2, H); });
    INFO(m);
    CHECK(contains(m, "x has 24 elements"));
    CHECK(contains(m, "16"));
  }
  const auto rows = random_values(p.padded_rows * H);
  {
    const std::string m = error_of([&] { scatter(random_values(p.padded_rows * H - 8), p, {}, 2, 2, H); });
    INFO(m);
    CHECK(contains(m, "rows has"));
    CHECK(contains(m, std::to_string(p.padded_rows * H)));
  }
  {
    const std::string m = error_of([&] { scatter(rows, p, {}, 3, 2, H); });
    INFO(m);
    CHECK(contains(m, "tokens * top_k = 3 * 2 = 6"));
    CHECK(contains(m, "4 assignments"));
  }
  {
    const std::string m = error_of([&] { scatter(rows, p, std::vector<double>(3, 1.0), 2, 2, H); });
    INFO(m);
    CHECK(contains(m, "weights has 3 elements"));
    CHECK(contains(m, "= 4"));
  }
  {
    const std::string m = error_of([&] { scatter_grad(random_values(3 * H), rows, p, {}, 2, 2, H); });
    INFO(m);
    CHECK(contains(m, "dy has 24 elements"));
    CHECK(contains(m, "16"));
  }
  CHECK(contains(error_of([&] { scatter_grad(x, rows, p, std::vector<double>(5, 1.0), 2, 2, H); }),
                 "weights has 5 elements"));
  CHECK(contains(error_of([&] { scatter_grad(x, random_values(8), p, {}, 2, 2, H); }), "rows has 8 elements"));
}

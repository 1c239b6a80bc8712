// CPU tests of the router's reference: top-k order and ties, renormalization, losses, the gradient
// against finite differences, jitter, and input validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "dmoe/routing_args.cuh"
#include "dmoe/routing_reference.hpp"
#include "dmoe/spec.hpp"

using namespace dmoe;

namespace {

std::vector<float> random_logits(int64_t tokens, int experts, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.f, 2.f);
  std::vector<float> v(tokens * experts);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace

TEST_CASE("route: top-k order, ties to the lower expert") {
  const std::vector<float> logits = {1, 3, 3, 0,    // tie between experts 1 and 2
                                     2, 2, 2, 2,    // all equal
                                     0, 1, 2, 5};   // strictly ordered, best last
  const auto r = reference::route(logits, 3, 4, 3, 0, 0.0, 0.0);
  CHECK(r.expert_ids == std::vector<int32_t>{1, 2, 0, 0, 1, 2, 3, 2, 1});
  CHECK(r.weights[3] == doctest::Approx(0.25));
  CHECK(r.weights[0] == r.weights[1]);
  CHECK(r.counts == std::vector<int64_t>{2, 3, 3, 1});
}

TEST_CASE("route: K = E sorts every expert by probability") {
  const std::vector<float> logits = {0.5f, -1.f, 2.f, 0.f, 1.f};
  const auto r = reference::route(logits, 1, 5, 5, 0, 0.0, 0.0);
  CHECK(r.expert_ids == std::vector<int32_t>{2, 4, 0, 3, 1});
  CHECK(std::accumulate(r.weights.begin(), r.weights.end(), 0.0) == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(std::is_sorted(r.weights.rbegin(), r.weights.rend()));
}

TEST_CASE("route: renormalized weights have unit p-norm") {
  const int64_t T = 37;
  const int E = 16, K = 4;
  const std::vector<float> logits = random_logits(T, E, 1);
  const auto raw = reference::route(logits, T, E, K, 0, 0.0, 0.0);
  const auto p1 = reference::route(logits, T, E, K, 1, 0.0, 0.0);
  const auto p2 = reference::route(logits, T, E, K, 2, 0.0, 0.0);
  CHECK(p1.expert_ids == raw.expert_ids);
  CHECK(p2.expert_ids == raw.expert_ids);
  for (int64_t t = 0; t < T; ++t) {
    double s1 = 0, s2 = 0, raw_sum = 0;
    for (int k = 0; k < K; ++k) {
      s1 += p1.weights[t * K + k];
      s2 += p2.weights[t * K + k] * p2.weights[t * K + k];
      raw_sum += raw.weights[t * K + k];
    }
    CHECK(s1 == doctest::Approx(1.0).epsilon(1e-12));
    CHECK(s2 == doctest::Approx(1.0).epsilon(1e-12));
    CHECK(raw_sum < 1.0);
    CHECK(p1.weights[t * K] == doctest::Approx(raw.weights[t * K] / raw_sum).epsilon(1e-12));
  }
}

TEST_CASE("route: counts sum to T·K for any routing") {
  for (auto [T, E, K] : {std::tuple{100, 8, 2}, std::tuple{1, 1, 1}, std::tuple{50, 6, 6}, std::tuple{513, 64, 8}}) {
    const auto r = reference::route(random_logits(T, E, 7), T, E, K, 1, 0.01, 0.001);
    CHECK(std::accumulate(r.counts.begin(), r.counts.end(), int64_t{0}) == int64_t(T) * K);
    CHECK(r.expert_ids.size() == size_t(T) * K);
  }
  // Every token to one expert.
  std::vector<float> one(20 * 4, 0.f);
  for (int t = 0; t < 20; ++t) one[t * 4 + 2] = 10.f;
  CHECK(reference::route(one, 20, 4, 1, 0, 1.0, 0.0).counts == std::vector<int64_t>{0, 0, 20, 0});
}

TEST_CASE("route: losses") {
  // Token t's logits are a rotation by t: each expert wins once and the mean scores are uniform.
  const int E = 4;
  const std::vector<float> base = {1.5f, 0.25f, -0.5f, 0.75f};
  std::vector<float> logits(E * E);
  for (int t = 0; t < E; ++t)
    for (int e = 0; e < E; ++e) logits[t * E + e] = base[(e - t + E) % E];
  const auto r = reference::route(logits, E, E, 1, 0, 0.125, 0.0);
  CHECK(r.counts == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(r.lbl == doctest::Approx(0.125).epsilon(1e-12));
  // K = 2 on the same uniform routing: still lbl = lbl_weight.
  CHECK(reference::route(logits, E, E, 2, 0, 0.5, 0.0).lbl == doctest::Approx(0.5).epsilon(1e-12));
  // All-equal logits: lse = log E for every token; all to expert 0 with uniform scores: lbl = w.
  const std::vector<float> flat(3 * 8, 0.f);
  const auto f = reference::route(flat, 3, 8, 1, 0, 2.0, 0.5);
  CHECK(f.z == doctest::Approx(0.5 * std::log(8.0) * std::log(8.0)).epsilon(1e-12));
  CHECK(f.lbl == doctest::Approx(2.0).epsilon(1e-12));
  // Skewed routing costs more than lbl_weight.
  std::vector<float> skew(16 * 4, 0.f);
  for (int t = 0; t < 16; ++t) skew[t * 4] = 3.f;
  CHECK(reference::route(skew, 16, 4, 1, 0, 1.0, 0.0).lbl > 1.5);
  // T = 0: no tokens, no loss.
  const auto empty = reference::route(std::span<const float>{}, 0, 4, 2, 0, 1.0, 1.0);
  CHECK(empty.lbl == 0);
  CHECK(empty.z == 0);
  CHECK(empty.counts == std::vector<int64_t>{0, 0, 0, 0});
}

TEST_CASE("router_grad: matches central finite differences (P = 0, 1, 2)") {
  const int64_t T = 5;
  const int E = 7, K = 3;
  const double lbl_w = 0.3, z_w = 0.2, d_lbl = 1.7, d_z = -0.9;
  // Distinct multiples of 1/4 per token: the top-k is separated by far more than the step, and logits ± h
  // (h = 2⁻¹²) are exact in fp32.
  std::mt19937_64 gen(42);
  std::vector<float> logits(T * E);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int> perm(E);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    for (int e = 0; e < E; ++e) logits[t * E + e] = 0.25f * float(perm[e]) - 1.f;
  }
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> dw(T * K);
  for (double& g : dw) g = u(gen);
  const float h = 1.f / 4096.f;
  for (int p : {0, 1, 2}) {
    INFO("renorm_p = " << p);
    const auto base = reference::route(logits, T, E, K, p, lbl_w, z_w);
    auto loss = [&](const std::vector<float>& l) {
      const auto r = reference::route(l, T, E, K, p, lbl_w, z_w);
      REQUIRE(r.expert_ids == base.expert_ids);  // the selection is held fixed
      double L = d_lbl * r.lbl + d_z * r.z;
      for (int64_t i = 0; i < T * K; ++i) L += dw[i] * r.weights[i];
      return L;
    };
    const auto grad = reference::router_grad(logits, base.expert_ids, dw, T, E, K, p, lbl_w, z_w, d_lbl, d_z);
    double max_err = 0, max_g = 0;
    for (int64_t i = 0; i < T * E; ++i) {
      std::vector<float> plus = logits, minus = logits;
      plus[i] += h;
      minus[i] -= h;
      const double fd = (loss(plus) - loss(minus)) / (2.0 * double(h));
      max_err = std::max(max_err, std::abs(fd - grad[i]));
      max_g = std::max(max_g, std::abs(grad[i]));
    }
    INFO("max |fd − grad| = " << max_err << ", max |grad| = " << max_g);
    CHECK(max_g > 1e-2);
    CHECK(max_err < 1e-6 * max_g + 1e-9);
  }
}

TEST_CASE("router_grad: each term alone") {
  const int64_t T = 3;
  const int E = 4, K = 1;
  const std::vector<float> logits = random_logits(T, E, 3);
  const auto r = reference::route(logits, T, E, K, 0, 1.0, 1.0);
  const std::vector<double> zero(T * K, 0.0);
  // No upstream gradient: nothing.
  for (double g : reference::router_grad(logits, r.expert_ids, zero, T, E, K, 0, 1.0, 1.0, 0.0, 0.0)) CHECK(g == 0);
  // Without the z-loss the gradient sums to zero over experts for every token (softmax's Jacobian).
  const std::vector<double> dw = {0.5, -1.0, 2.0};
  const auto g = reference::router_grad(logits, r.expert_ids, dw, T, E, K, 1, 1.0, 1.0, 0.7, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    double s = 0, s_abs = 0;
    for (int e = 0; e < E; ++e) {
      s += g[t * E + e];
      s_abs += std::abs(g[t * E + e]);
    }
    CHECK(s_abs > 0);
    CHECK(std::abs(s) < 1e-12);
  }
}

TEST_CASE("jitter: the shared noise, within [1 − eps, 1 + eps)") {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 1.f + float(i % 7);
  const float eps = 0.1f;
  const auto y = reference::jitter(x, eps, 123, 456);
  REQUIRE(y.size() == x.size());
  double mean = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float f = y[i] / x[i];
    CHECK(f >= 1.f - eps - 1e-6f);
    CHECK(f < 1.f + eps + 1e-6f);
    CHECK(y[i] == x[i] * jitter_factor(123, 456, i, eps));
    mean += f;
  }
  CHECK(mean / double(x.size()) == doctest::Approx(1.0).epsilon(0.01));
  CHECK(reference::jitter(x, eps, 123, 456) == y);  // deterministic
  CHECK(reference::jitter(x, eps, 124, 456) != y);  // the seed matters
  CHECK(reference::jitter(x, eps, 123, 457) != y);
  CHECK(reference::jitter(x, 0.f, 1, 2) == x);       // eps = 0: identity
}

TEST_CASE("jitter: the noise is uniform and uncorrelated across elements, seeds and the element's high word") {
  // The noise is a hash of (seed, element) (routing_args.cuh): check the statistics a training run relies on.
  // 2^20 draws per stream; bounds far outside these sample sizes' spread (σ of a mean of U(0,1): 2.8e-4,
  // of a correlation: 1e-3; χ² over 64 bins: mean 63, σ 11), so the test fails only on a broken hash.
  constexpr uint32_t kDraws = 1u << 20;
  auto draws = [&](uint32_t lo, uint32_t hi, uint64_t first) {
    std::vector<double> u(kDraws);
    for (uint32_t i = 0; i < kDraws; ++i) u[i] = (double(jitter_factor(lo, hi, first + i, 0.5f)) - 0.5);
    return u;  // U(0, 1) when the noise is U(0.5, 1.5)
  };
  auto correlation = [](const std::vector<double>& a, const std::vector<double>& b, size_t lag) {
    double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
    const size_t n = a.size() - lag;
    for (size_t i = 0; i < n; ++i) {
      sa += a[i], sb += b[i + lag], sab += a[i] * b[i + lag], saa += a[i] * a[i], sbb += b[i + lag] * b[i + lag];
    }
    const double ma = sa / n, mb = sb / n;
    return (sab / n - ma * mb) / std::sqrt((saa / n - ma * ma) * (sbb / n - mb * mb));
  };
  const auto a = draws(123, 456, 0);
  double mean = 0;
  std::vector<int> bins(64, 0);
  const auto [lo, hi] = std::minmax_element(a.begin(), a.end());
  REQUIRE(*lo >= 0.0);
  REQUIRE(*hi < 1.0);
  for (double v : a) {
    mean += v;
    ++bins[size_t(v * 64)];
  }
  CHECK(std::abs(mean / kDraws - 0.5) < 2e-3);
  double chi2 = 0;
  for (int c : bins) chi2 += (c - kDraws / 64.0) * (c - kDraws / 64.0) / (kDraws / 64.0);
  CHECK(chi2 < 140);
  for (size_t lag : {1, 2, 8, 64}) CHECK(std::abs(correlation(a, a, lag)) < 0.01);
  CHECK(std::abs(correlation(a, draws(124, 456, 0), 0)) < 0.01);  // neighbouring seeds
  CHECK(std::abs(correlation(a, draws(123, 457, 0), 0)) < 0.01);
  CHECK(std::abs(correlation(a, draws(123, 456, uint64_t(1) << 32), 0)) < 0.01);  // the high word matters
}

TEST_CASE("route and router_grad: bad inputs throw naming the value") {
  const std::vector<float> logits(4 * 3, 0.f);
  CHECK_THROWS_WITH_AS(reference::route(logits, 4, 3, 4, 0, 0, 0), doctest::Contains("top_k = 4"), InvalidArgument);
  CHECK_THROWS_AS(reference::route(logits, 4, 0, 1, 0, 0, 0), InvalidArgument);
  CHECK_THROWS_WITH_AS(reference::route(logits, 4, -2, 1, 0, 0, 0), doctest::Contains("-2"), InvalidArgument);
  CHECK_THROWS_WITH_AS(reference::route(logits, 5, 3, 1, 0, 0, 0), doctest::Contains("12"), InvalidArgument);
  CHECK_THROWS_WITH_AS(reference::route(logits, 4, 3, 1, 3, 0, 0), doctest::Contains("renorm_p = 3"),
                       InvalidArgument);
  CHECK_THROWS_AS(reference::route(logits, 4, 3, 0, 0, 0, 0), InvalidArgument);
  const std::vector<double> dw(4, 1.0);
  CHECK_THROWS_WITH_AS(reference::router_grad(logits, std::vector<int32_t>{0, 1, 3, 2}, dw, 4, 3, 1, 0, 0, 0, 0, 0),
                       doctest::Contains("expert_ids[2] = 3"), InvalidArgument);
  CHECK_THROWS_WITH_AS(reference::router_grad(logits, std::vector<int32_t>{0, -1, 2, 2}, dw, 4, 3, 1, 0, 0, 0, 0, 0),
                       doctest::Contains("-1"), InvalidArgument);
  CHECK_THROWS_AS(reference::router_grad(logits, std::vector<int32_t>{0, 1, 2}, dw, 4, 3, 1, 0, 0, 0, 0, 0),
                  InvalidArgument);
  CHECK_THROWS_AS(reference::router_grad(logits, std::vector<int32_t>{0, 1}, dw, 4, 3, 2, 0, 0, 0, 0, 0),
                  InvalidArgument);
  CHECK_NOTHROW(reference::router_grad(logits, std::vector<int32_t>{0, 1, 2, 2}, dw, 4, 3, 1, 0, 0, 0, 0, 0));
}

TEST_CASE("route: the expert bias orders the top-k selection only; weights stay the unbiased probabilities") {
  const int64_t T = 64;
  const int E = 8, K = 2;
  const std::vector<float> logits = random_logits(T, E, std::random_device{}());
  const auto plain = reference::route(logits, T, E, K, 0, 0.01, 0.001);
  // A zero bias changes nothing.
  const std::vector<float> zero(E, 0.f);
  const auto same = reference::route(logits, T, E, K, 0, 0.01, 0.001, zero);
  CHECK(same.expert_ids == plain.expert_ids);
  CHECK(same.weights == plain.weights);
  CHECK(same.lbl == plain.lbl);

  // Expert 5 biased past every probability: chosen first for every token, with its own softmax
  // probability as weight; the second slot is the best of the rest, as without the bias.
  std::vector<float> bias(E, 0.f);
  bias[5] = 2.f;
  bias[2] = -2.f;  // and expert 2 never chosen
  for (int renorm : {0, 1}) {
    const auto r = reference::route(logits, T, E, K, renorm, 0.01, 0.001, bias);
    std::vector<double> p(E);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> l(logits.begin() + t * E, logits.begin() + (t + 1) * E);
      reference::softmax_row(l, p);
      CHECK(r.expert_ids[t * K] == 5);
      int best = -1;
      for (int e = 0; e < E; ++e)
        if (e != 5 && e != 2 && (best < 0 || p[e] > p[best])) best = e;
      CHECK(r.expert_ids[t * K + 1] == best);
      const double s = renorm == 1 ? p[5] + p[best] : 1.0;
      CHECK(r.weights[t * K] == doctest::Approx(p[5] / s).epsilon(1e-12));
      CHECK(r.weights[t * K + 1] == doctest::Approx(p[best] / s).epsilon(1e-12));
    }
    CHECK(r.counts[5] == T);
    CHECK(r.counts[2] == 0);
    // The load-balancing loss counts the biased selection over the unbiased scores.
    std::vector<double> score_sum(E, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> l(logits.begin() + t * E, logits.begin() + (t + 1) * E);
      reference::softmax_row(l, p);
      for (int e = 0; e < E; ++e) score_sum[e] += p[e];
    }
    double lbl = 0;
    for (int e = 0; e < E; ++e) lbl += double(r.counts[e]) * score_sum[e] / double(T);
    CHECK(r.lbl == doctest::Approx(E * 0.01 / (double(T) * K) * lbl).epsilon(1e-12));
  }
  // A small bias reorders near-ties only: the selection is the top-k of p + bias.
  std::vector<float> small(E);
  for (int e = 0; e < E; ++e) small[e] = 0.05f * float(e % 3) - 0.05f;
  const auto r = reference::route(logits, T, E, K, 0, 0.01, 0.001, small);
  std::vector<double> p(E);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> l(logits.begin() + t * E, logits.begin() + (t + 1) * E);
    reference::softmax_row(l, p);
    double min_chosen = INFINITY, max_other = -INFINITY;
    std::vector<bool> chosen(E, false);
    for (int k = 0; k < K; ++k) chosen[r.expert_ids[t * K + k]] = true;
    for (int e = 0; e < E; ++e) {
      const double key = p[e] + double(small[e]);
      if (chosen[e]) min_chosen = std::min(min_chosen, key);
      else max_other = std::max(max_other, key);
    }
    CHECK(min_chosen >= max_other);
    for (int k = 0; k < K; ++k) CHECK(r.weights[t * K + k] == doctest::Approx(p[r.expert_ids[t * K + k]]).epsilon(1e-12));
  }
  CHECK_THROWS_WITH_AS(reference::route(logits, T, E, K, 0, 0, 0, std::vector<float>(3, 0.f)),
                       doctest::Contains("expert_bias holds 3 values, expected experts = 8"), InvalidArgument);
}

// The paired timing's batch order and ratio (bench/paired.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "paired.hpp"

using dmoe::bench::paired_ratio;
using dmoe::bench::paired_side;

TEST_CASE("paired timing: every pair holds one batch of each side, the pairs' order alternating") {
  constexpr int kPairs = 8;
  int count[2] = {0, 0};
  for (int i = 0; i < kPairs; ++i) {
    const int first = paired_side(2 * i), second = paired_side(2 * i + 1);
    CHECK(first != second);
    CHECK(first == i % 2);  // AB, BA, AB, …
    ++count[first], ++count[second];
  }
  CHECK(count[0] == kPairs);
  CHECK(count[1] == kPairs);
}

// Simulates a drifting clock: batch k of a kernel whose true time is t takes t · (1 + drift · k).
// Alternating: through dmoe::bench::alternate, as the benchmarks run; else all of A, then all of B.
std::vector<double> run(bool alternating, double a_ms, double b_ms, double drift, std::vector<double>& b_out) {
  constexpr int kPairs = 8;
  int k = 0;
  auto batch = [&](int side) { return (side == 0 ? a_ms : b_ms) * (1 + drift * k++); };
  if (alternating) {
    auto ms = dmoe::bench::alternate(kPairs, batch);
    b_out = ms[1];
    return ms[0];
  }
  std::vector<double> a;
  b_out.clear();
  for (int i = 0; i < kPairs; ++i) a.push_back(batch(0));
  for (int i = 0; i < kPairs; ++i) b_out.push_back(batch(1));
  return a;
}

TEST_CASE("paired timing: a drifting clock cancels out of the ratio, unlike timing one side after the other") {
  std::vector<double> b;
  // B is 5 % slower than A; the clock slows by 1 % per batch (16 % over the run).
  const std::vector<double> a = run(true, 1.0, 1.05, 0.01, b);
  const double paired = paired_ratio(a, b);
  CHECK(paired == doctest::Approx(1.05).epsilon(0.005));
  const std::vector<double> a_seq = run(false, 1.0, 1.05, 0.01, b);
  const double sequential = b[b.size() / 2] / a_seq[a_seq.size() / 2];  // medians of each side
  CHECK(sequential > 1.12);  // the drift's 8 batches land on B alone
  // No drift: both orders give the true ratio.
  CHECK(paired_ratio(run(true, 2.0, 1.0, 0.0, b), b) == doctest::Approx(0.5));
}

TEST_CASE("paired timing: the median resists one disturbed pair; mismatched sides are refused") {
  const std::vector<double> a = {1, 1, 1, 1, 1}, b = {1.1, 1.1, 9.0, 1.1, 1.1};
  CHECK(paired_ratio(a, b) == doctest::Approx(1.1));
  const std::vector<double> even_a = {1, 1, 1, 1}, even_b = {1.0, 1.2, 1.4, 1.6};
  CHECK(paired_ratio(even_a, even_b) == doctest::Approx(1.3));
  CHECK_THROWS_AS(paired_ratio(a, even_b), std::invalid_argument);
  CHECK_THROWS_AS(paired_ratio(std::vector<double>{}, std::vector<double>{}), std::invalid_argument);
}

// Paired timing: two kernels timed in alternating batches, A B B A A B B A …, so that both run in the same
// clock and power state. At the H200's 700 W cap the clock drifts by ~10 % over seconds (bench/NOTES.md,
// session 16), more than the gaps a benchmark or the tuner is asked to resolve.
#pragma once
#include <algorithm>
#include <array>
#include <span>
#include <stdexcept>
#include <vector>

namespace dmoe::bench {

// Which side runs batch k of 2·pairs: (k + k/2) % 2. Adjacent batches 2i and 2i + 1 form pair i, one of
// each side, the pairs' order alternating (AB, BA, AB, …): a drift that is linear over a pair cancels out
// of the mean of two consecutive pairs' ratios, and the median over the pairs resists outliers.
constexpr int paired_side(int k) { return (k + k / 2) % 2; }

// Runs 2·pairs batches in the order paired_side gives; batch(side) runs and times one batch of that side
// and returns its time per launch. Returns each side's times in the order they ran (pair i: [0][i], [1][i]).
template <class Batch>
std::array<std::vector<double>, 2> alternate(int pairs, Batch&& batch) {
  std::array<std::vector<double>, 2> ms;
  for (int k = 0; k < 2 * pairs; ++k) {
    const int side = paired_side(k);
    ms[size_t(side)].push_back(batch(side));
  }
  return ms;
}

// The median over the pairs of b / a, from each side's batch times in the order they ran (a[i] and b[i]
// are pair i's). Even counts take the mean of the two middle ratios.
inline double paired_ratio(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size() || a.empty())
    throw std::invalid_argument("paired_ratio: the two sides need the same, nonzero number of batches");
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = b[i] / a[i];
  std::sort(r.begin(), r.end());
  const size_t n = r.size();
  return n % 2 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2]);
}

}  // namespace dmoe::bench

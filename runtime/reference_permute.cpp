// CPU references of the permutation, padded gather, padded scatter and the scatter's backward
// (dmoe-semantics.md), in fp64. The device kernels (templates/dmoe/kernels/permute.cuh) are tested
// against these.
#include <fmt/format.h>

#include <limits>
#include <string_view>

#include "dmoe/routing_reference.hpp"
#include "dmoe/spec.hpp"

namespace dmoe::reference {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

void require_positive(std::string_view what, int64_t v) {
  if (v <= 0) throw InvalidArgument(fmt::format("{} must be positive, got {}", what, v));
}

// The assignment count T·K of a permutation, checked against its own arrays.
int64_t assignments_of(const Permutation& p) {
  const int64_t n = static_cast<int64_t>(p.indices.size());
  if (static_cast<int64_t>(p.bin_ids.size()) != n || static_cast<int64_t>(p.rows.size()) != n)
    throw InvalidArgument(fmt::format("permutation arrays disagree: indices {}, bin_ids {}, rows {}", n,
                                      p.bin_ids.size(), p.rows.size()));
  if (p.counts.size() != p.bins.size() || p.counts.size() != p.padded_bins.size())
    throw InvalidArgument(fmt::format("permutation per-expert arrays disagree: counts {}, bins {}, padded_bins {}",
                                      p.counts.size(), p.bins.size(), p.padded_bins.size()));
  return n;
}

void require_tokens(const Permutation& p, int64_t tokens, int top_k) {
  require_positive("top_k", top_k);
  if (tokens < 0) throw InvalidArgument(fmt::format("tokens must not be negative, got {}", tokens));
  const int64_t n = assignments_of(p);
  if (tokens * top_k != n)
    throw InvalidArgument(fmt::format("tokens * top_k = {} * {} = {} does not match the permutation's {} assignments",
                                      tokens, top_k, tokens * top_k, n));
}

// Expert rows [>= padded_rows, H]: a buffer of the padded-row capacity is accepted.
void require_rows(std::string_view what, std::span<const float> rows, const Permutation& p, int hidden) {
  const int64_t need = p.padded_rows * hidden;
  if (static_cast<int64_t>(rows.size()) < need || static_cast<int64_t>(rows.size()) % hidden != 0)
    throw InvalidArgument(fmt::format("{} has {} elements, expected a multiple of hidden = {} of at least "
                                      "padded_rows * hidden = {} * {} = {}",
                                      what, rows.size(), hidden, p.padded_rows, hidden, need));
}

void require_weights(std::span<const double> weights, int64_t n, bool allow_empty) {
  if (allow_empty && weights.empty()) return;
  if (static_cast<int64_t>(weights.size()) != n)
    throw InvalidArgument(fmt::format("weights has {} elements, expected tokens * top_k = {}{}", weights.size(), n,
                                      allow_empty ? " (or none)" : ""));
}

}  // namespace

Permutation permute(std::span<const int32_t> expert_ids, int experts, int top_k, int block) {
  require_positive("experts", experts);
  require_positive("top_k", top_k);
  require_positive("block", block);
  const int64_t n = static_cast<int64_t>(expert_ids.size());
  if (n % top_k != 0)
    throw InvalidArgument(fmt::format("expert_ids has {} elements, not a multiple of top_k = {}", n, top_k));
  if (n > kInt32Max)
    throw InvalidArgument(fmt::format("tokens * top_k = {} overflows the 32-bit limit {}", n, kInt32Max));

  Permutation p;
  p.counts.assign(experts, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t e = expert_ids[i];
    if (e < 0 || e >= experts)
      throw InvalidArgument(
          fmt::format("expert id {} of assignment {} is out of range [0, {})", e, i, experts));
    ++p.counts[e];
  }
  p.bins.resize(experts);
  p.padded_bins.resize(experts);
  int64_t sum = 0, padded = 0;
  for (int e = 0; e < experts; ++e) {
    sum += p.counts[e];
    padded += (p.counts[e] + block - 1) / block * block;
    p.bins[e] = sum;
    p.padded_bins[e] = padded;
    if (padded > kInt32Max)
      throw InvalidArgument(fmt::format("padded rows {} (through expert {}, block {}) overflow the 32-bit limit {}",
                                        padded, e, block, kInt32Max));
  }
  p.padded_rows = padded;

  // Stable counting sort: the next sorted position and padded row of each expert.
  std::vector<int64_t> next(experts), next_row(experts);
  for (int e = 0; e < experts; ++e) {
    next[e] = e ? p.bins[e - 1] : 0;
    next_row[e] = e ? p.padded_bins[e - 1] : 0;
  }
  p.indices.resize(n);
  p.bin_ids.resize(n);
  p.rows.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t e = expert_ids[i];
    const int64_t pos = next[e]++;
    p.indices[pos] = static_cast<int32_t>(i);
    p.bin_ids[pos] = e;
    p.rows[i] = static_cast<int32_t>(next_row[e]++);
  }
  return p;
}

std::vector<double> gather(std::span<const float> x, const Permutation& p, int top_k, int hidden) {
  require_positive("top_k", top_k);
  require_positive("hidden", hidden);
  const int64_t n = assignments_of(p);
  if (n % top_k != 0)
    throw InvalidArgument(fmt::format("the permutation's {} assignments are not a multiple of top_k = {}", n, top_k));
  const int64_t tokens = n / top_k;
  if (static_cast<int64_t>(x.size()) != tokens * hidden)
    throw InvalidArgument(fmt::format("x has {} elements, expected tokens * hidden = {} * {} = {}", x.size(), tokens,
                                      hidden, tokens * hidden));
  const int64_t H = hidden;
  std::vector<double> y(static_cast<size_t>(p.padded_rows * H), 0.0);  // padding rows stay exactly zero
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = p.rows[i], t = i / top_k;
    if (r < 0 || r >= p.padded_rows)
      throw InvalidArgument(fmt::format("row {} of assignment {} is out of range [0, {})", r, i, p.padded_rows));
    for (int64_t h = 0; h < H; ++h) y[r * H + h] = x[t * H + h];
  }
  return y;
}

std::vector<double> scatter(std::span<const float> rows, const Permutation& p, std::span<const double> weights,
                            int64_t tokens, int top_k, int hidden, std::span<const float> rows2) {
  require_positive("hidden", hidden);
  require_tokens(p, tokens, top_k);
  require_rows("rows", rows, p, hidden);
  if (!rows2.empty() && rows2.size() != rows.size())
    throw InvalidArgument(fmt::format("rows2 has {} elements, expected as many as rows ({})", rows2.size(), rows.size()));
  require_weights(weights, tokens * top_k, true);
  const int64_t H = hidden, K = top_k;
  const int64_t capacity = static_cast<int64_t>(rows.size()) / H;
  std::vector<double> y(static_cast<size_t>(tokens * H), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    double* out = y.data() + t * H;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = t * K + k, r = p.rows[i];
      if (r < 0 || r >= capacity)
        throw InvalidArgument(fmt::format("row {} of assignment {} is out of range [0, {})", r, i, capacity));
      const double w = weights.empty() ? 1.0 : weights[i];
      const float* in = rows.data() + r * H;
      if (rows2.empty()) {
        for (int64_t h = 0; h < H; ++h) out[h] += w * double(in[h]);
      } else {
        const float* in2 = rows2.data() + r * H;
        for (int64_t h = 0; h < H; ++h) out[h] += w * (double(in[h]) + double(in2[h]));
      }
    }
  }
  return y;
}

ScatterGrad scatter_grad(std::span<const float> dy, std::span<const float> rows, const Permutation& p,
                         std::span<const double> weights, int64_t tokens, int top_k, int hidden) {
  require_positive("hidden", hidden);
  require_tokens(p, tokens, top_k);
  require_rows("rows", rows, p, hidden);
  require_weights(weights, tokens * top_k, true);
  if (static_cast<int64_t>(dy.size()) != tokens * hidden)
    throw InvalidArgument(fmt::format("dy has {} elements, expected tokens * hidden = {} * {} = {}", dy.size(), tokens,
                                      hidden, tokens * hidden));
  const int64_t H = hidden, K = top_k;
  ScatterGrad g;
  g.d_rows.assign(static_cast<size_t>(p.padded_rows * H), 0.0);  // padding rows get no gradient
  g.dw.assign(static_cast<size_t>(tokens * K), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* d = dy.data() + t * H;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = t * K + k, r = p.rows[i];
      if (r < 0 || r >= p.padded_rows)
        throw InvalidArgument(fmt::format("row {} of assignment {} is out of range [0, {})", r, i, p.padded_rows));
      const double w = weights.empty() ? 1.0 : weights[i];
      const float* o = rows.data() + r * H;
      double* dr = g.d_rows.data() + r * H;
      double dot = 0;
      for (int64_t h = 0; h < H; ++h) {
        dr[h] = double(d[h]) * w;
        dot += double(o[h]) * double(d[h]);
      }
      g.dw[i] = dot;
    }
  }
  return g;
}

}  // namespace dmoe::reference

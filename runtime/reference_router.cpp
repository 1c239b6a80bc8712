// CPU references of the router: softmax + top-k + losses, the gradient of the logits, and jitter.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dmoe/routing_args.cuh"
#include "dmoe/routing_reference.hpp"
#include "dmoe/spec.hpp"

namespace dmoe::reference {
namespace {

template <class L>
void check_shape(std::span<const L> logits, int64_t tokens, int experts, int top_k, int renorm_p) {
  if (experts <= 0) throw InvalidArgument(fmt::format("experts must be positive, got {}", experts));
  if (top_k <= 0) throw InvalidArgument(fmt::format("top_k must be positive, got {}", top_k));
  if (top_k > experts)
    throw InvalidArgument(fmt::format("top_k = {} exceeds the number of experts {}", top_k, experts));
  if (tokens < 0) throw InvalidArgument(fmt::format("tokens must not be negative, got {}", tokens));
  if (renorm_p < 0 || renorm_p > 2)
    throw InvalidArgument(fmt::format("renorm_p = {} is not supported (expected 0, 1 or 2)", renorm_p));
  if (static_cast<int64_t>(logits.size()) != tokens * experts)
    throw InvalidArgument(fmt::format("logits hold {} values, expected tokens * experts = {} * {} = {}",
                                      logits.size(), tokens, experts, tokens * experts));
}

// Softmax of one token's logits in fp64; returns logsumexp.
template <class L>
double softmax(const L* logits, int experts, double* p) {
  const double m = *std::max_element(logits, logits + experts);
  double sum = 0;
  for (int e = 0; e < experts; ++e) sum += p[e] = std::exp(double(logits[e]) - m);
  for (int e = 0; e < experts; ++e) p[e] /= sum;
  return m + std::log(sum);
}

double renorm(std::span<const double> selected, int renorm_p) {
  double s = 0;
  for (double v : selected) s += renorm_p == 2 ? v * v : v;
  return renorm_p == 2 ? std::sqrt(s) : s;
}

template <class L>
RouterResult route_impl(std::span<const L> logits, int64_t tokens, int experts, int top_k, int renorm_p,
                        double lbl_weight, double z_weight, std::span<const float> bias) {
  check_shape(logits, tokens, experts, top_k, renorm_p);
  if (!bias.empty() && int64_t(bias.size()) != experts)
    throw InvalidArgument(fmt::format("expert_bias holds {} values, expected experts = {}", bias.size(), experts));
  RouterResult r;
  r.expert_ids.resize(tokens * top_k);
  r.weights.resize(tokens * top_k);
  r.counts.assign(experts, 0);
  std::vector<double> p(experts), key(experts), score_sum(experts, 0.0), selected(top_k);
  std::vector<int32_t> order(experts);
  double z = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    const double lse = softmax(logits.data() + t * experts, experts, p.data());
    z += lse * lse;
    for (int e = 0; e < experts; ++e) score_sum[e] += p[e];
    // The selection's order: the probability plus the bias; the weights below stay p.
    for (int e = 0; e < experts; ++e) key[e] = bias.empty() ? p[e] : p[e] + double(bias[e]);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
    for (int k = 0; k < top_k; ++k) selected[k] = p[order[k]];
    const double s = renorm_p == 0 ? 1.0 : renorm(selected, renorm_p);
    for (int k = 0; k < top_k; ++k) {
      r.expert_ids[t * top_k + k] = order[k];
      r.weights[t * top_k + k] = selected[k] / s;
      ++r.counts[order[k]];
    }
  }
  if (tokens > 0) {
    const double T = double(tokens);
    double lbl = 0;
    for (int e = 0; e < experts; ++e) lbl += double(r.counts[e]) * (score_sum[e] / T);
    r.lbl = experts * lbl_weight / (T * top_k) * lbl;
    r.z = z_weight * z / T;
  }
  return r;
}

template <class L>
std::vector<double> router_grad_impl(std::span<const L> logits, std::span<const int32_t> expert_ids,
                                     std::span<const double> dw, int64_t tokens, int experts, int top_k,
                                     int renorm_p, double lbl_weight, double z_weight, double d_lbl, double d_z) {
  check_shape(logits, tokens, experts, top_k, renorm_p);
  const int64_t n = tokens * top_k;
  if (static_cast<int64_t>(expert_ids.size()) != n || static_cast<int64_t>(dw.size()) != n)
    throw InvalidArgument(fmt::format("expert_ids and dw hold {} and {} values, expected tokens * top_k = {}",
                                      expert_ids.size(), dw.size(), n));
  std::vector<int64_t> counts(experts, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (expert_ids[i] < 0 || expert_ids[i] >= experts)
      throw InvalidArgument(fmt::format("expert_ids[{}] = {} is out of range [0, {})", i, expert_ids[i], experts));
    ++counts[expert_ids[i]];
  }
  std::vector<double> grad(tokens * experts), p(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const double lse = softmax(logits.data() + t * experts, experts, p.data());
    router_grad_row(p, lse, expert_ids.subspan(t * top_k, top_k), dw.subspan(t * top_k, top_k), counts, tokens,
                    renorm_p, lbl_weight, z_weight, d_lbl, d_z, std::span(grad).subspan(t * experts, experts));
  }
  return grad;
}

}  // namespace

double softmax_row(std::span<const double> logits, std::span<double> p) {
  return softmax(logits.data(), int(logits.size()), p.data());
}

void routing_weights_row(std::span<const double> p, std::span<const int32_t> ids, int renorm_p, std::span<double> w) {
  for (size_t k = 0; k < ids.size(); ++k) w[k] = p[ids[k]];
  const double s = renorm_p == 0 ? 1.0 : renorm(w.first(ids.size()), renorm_p);
  for (size_t k = 0; k < ids.size(); ++k) w[k] /= s;
}

void router_grad_row(std::span<const double> p, double lse, std::span<const int32_t> ids, std::span<const double> dw,
                     std::span<const int64_t> counts, int64_t tokens, int renorm_p, double lbl_weight,
                     double z_weight, double d_lbl, double d_z, std::span<double> grad) {
  const int experts = int(p.size()), top_k = int(ids.size());
  const double T = double(tokens);
  std::vector<double> dp(experts), selected(top_k);
  // Load balancing: lbl = E·w/(T·K) · Σ_e count_e · (1/T) Σ_t p[t, e], counts held fixed.
  for (int e = 0; e < experts; ++e) dp[e] = d_lbl * lbl_weight * experts / (T * top_k) * double(counts[e]) / T;
  for (int k = 0; k < top_k; ++k) selected[k] = p[ids[k]];
  if (renorm_p == 0) {
    for (int k = 0; k < top_k; ++k) dp[ids[k]] += dw[k];
  } else {
    // w_k = p_k / S: P = 1, ∂S/∂p_j = 1; P = 2, ∂S/∂p_j = p_j / S.
    const double S = renorm(selected, renorm_p);
    double gp = 0;  // Σ_k dw_k · p_k
    for (int k = 0; k < top_k; ++k) gp += dw[k] * selected[k];
    for (int k = 0; k < top_k; ++k) {
      const double dS = renorm_p == 1 ? 1.0 : selected[k] / S;
      dp[ids[k]] += dw[k] / S - gp / (S * S) * dS;
    }
  }
  double dot = 0;
  for (int e = 0; e < experts; ++e) dot += p[e] * dp[e];
  const double zc = d_z * z_weight * 2.0 * lse / T;
  for (int e = 0; e < experts; ++e) grad[e] = p[e] * (dp[e] - dot) + zc * p[e];
}

std::vector<float> jitter(std::span<const float> x, float eps, uint32_t seed_lo, uint32_t seed_hi) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * jitter_factor(seed_lo, seed_hi, uint64_t(i), eps);
  return y;
}


RouterResult route(std::span<const float> logits, int64_t tokens, int experts, int top_k, int renorm_p,
                   double lbl_weight, double z_weight, std::span<const float> expert_bias) {
  return route_impl(logits, tokens, experts, top_k, renorm_p, lbl_weight, z_weight, expert_bias);
}
RouterResult route(std::span<const double> logits, int64_t tokens, int experts, int top_k, int renorm_p,
                   double lbl_weight, double z_weight, std::span<const float> expert_bias) {
  return route_impl(logits, tokens, experts, top_k, renorm_p, lbl_weight, z_weight, expert_bias);
}
std::vector<double> router_grad(std::span<const float> logits, std::span<const int32_t> expert_ids,
                                std::span<const double> dw, int64_t tokens, int experts, int top_k, int renorm_p,
                                double lbl_weight, double z_weight, double d_lbl, double d_z) {
  return router_grad_impl(logits, expert_ids, dw, tokens, experts, top_k, renorm_p, lbl_weight, z_weight, d_lbl, d_z);
}
std::vector<double> router_grad(std::span<const double> logits, std::span<const int32_t> expert_ids,
                                std::span<const double> dw, int64_t tokens, int experts, int top_k, int renorm_p,
                                double lbl_weight, double z_weight, double d_lbl, double d_z) {
  return router_grad_impl(logits, expert_ids, dw, tokens, experts, top_k, renorm_p, lbl_weight, z_weight, d_lbl, d_z);
}

}  // namespace dmoe::reference

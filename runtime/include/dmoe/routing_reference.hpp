// dmoe/routing_reference.hpp — CPU references of the routing chain (dmoe-semantics.md), in fp64 where
// arithmetic is involved. Every routing kernel is tested against these; the topology's reference is
// reference::topology_from_counts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dmoe::reference {

// Router: softmax over E, top-K (ties to the lower expert index; k = 0 is the best), weights = the
// selected probabilities, renormalized by their p-norm when renorm_p is 1 or 2. Losses as the
// semantics note defines them:
//   lbl = E · lbl_weight / (T · K) · Σ_e count_e · mean_t softmax[t, e]
//   z   = z_weight · mean_t logsumexp(logits_t)²
// expert_bias (optional, [E]): DeepSeek-V3's auxiliary-loss-free balancing bias, added to the scores for
// the top-K selection only (order by softmax + bias, ties to the lower expert); the weights stay the
// selected experts' unbiased probabilities, and nothing depends on the bias otherwise (no gradient).
struct RouterResult {
  std::vector<int32_t> expert_ids;  // [T·K]
  std::vector<double> weights;      // [T·K]
  std::vector<int64_t> counts;      // [E]
  double lbl = 0, z = 0;
};
RouterResult route(std::span<const float> logits, int64_t tokens, int experts, int top_k, int renorm_p,
                   double lbl_weight, double z_weight, std::span<const float> expert_bias = {});
RouterResult route(std::span<const double> logits, int64_t tokens, int experts, int top_k, int renorm_p,
                   double lbl_weight, double z_weight,
                   std::span<const float> expert_bias = {});  // fp64 logits (the CPU layer)

// One token of the router, for callers that recompute a few tokens of a large routing (the layer's
// sampled check): the softmax of its logits into p [E] (returns logsumexp); the weights of its chosen
// experts ids [K] (their probabilities, renormalized as `route` does); the gradient of its logits [E]
// given dw [K], the load-balancing term taken with `counts` [E] of the whole routing of `tokens` tokens
// (router_grad runs this per token).
double softmax_row(std::span<const double> logits, std::span<double> p);
void routing_weights_row(std::span<const double> p, std::span<const int32_t> ids, int renorm_p, std::span<double> w);
void router_grad_row(std::span<const double> p, double lse, std::span<const int32_t> ids, std::span<const double> dw,
                     std::span<const int64_t> counts, int64_t tokens, int renorm_p, double lbl_weight,
                     double z_weight, double d_lbl, double d_z, std::span<double> grad);

// Gradient of the logits [T, E] given dw = ∂L/∂weights [T·K] and the upstream gradients of the two
// (weighted) losses, d_lbl and d_z; the expert selection is held fixed (as autograd does through top-k).
std::vector<double> router_grad(std::span<const float> logits, std::span<const int32_t> expert_ids,
                                std::span<const double> dw, int64_t tokens, int experts, int top_k, int renorm_p,
                                double lbl_weight, double z_weight, double d_lbl, double d_z);
std::vector<double> router_grad(std::span<const double> logits, std::span<const int32_t> expert_ids,
                                std::span<const double> dw, int64_t tokens, int experts, int top_k, int renorm_p,
                                double lbl_weight, double z_weight, double d_lbl, double d_z);

// x · jitter_factor(seed, element, eps) element-wise (routing_args.cuh), the same noise as the device.
std::vector<float> jitter(std::span<const float> x, float eps, uint32_t seed_lo, uint32_t seed_hi);

// The stable permutation of the T·K assignments by expert.
struct Permutation {
  std::vector<int32_t> indices;  // [T·K] assignment at sorted position p
  std::vector<int32_t> bin_ids;  // [T·K] its expert
  std::vector<int32_t> rows;     // [T·K] padded row of assignment i
  std::vector<int64_t> counts, bins, padded_bins;  // [E]; bins and padded_bins are inclusive cumsums
  int64_t padded_rows = 0;       // padded_bins[E − 1]
};
Permutation permute(std::span<const int32_t> expert_ids, int experts, int top_k, int block);

// Padded gather: [padded_rows, H]; row padded_start_e + j = x[indices[bins_start_e + j] / K] for j <
// count_e, else zero.
std::vector<double> gather(std::span<const float> x, const Permutation&, int top_k, int hidden);

// Padded scatter: y [T, H], y[t] = Σ_k w[t·K + k] · rows[row(t, k)] (weights empty: unweighted sum, which
// is the gather's backward). With rows2 (as long as rows), each row is rows[r] + rows2[r]: the gated
// experts' dX = dA·W1 + dG·V1 from its two products.
std::vector<double> scatter(std::span<const float> rows, const Permutation&, std::span<const double> weights,
                            int64_t tokens, int top_k, int hidden, std::span<const float> rows2 = {});

// Scatter's backward: the expert rows' gradient [padded_rows, H] (dy[t] · w[t,k] at row(t, k), zero on
// padding rows) and dw[t·K + k] = ⟨rows[row(t, k)], dy[t]⟩.
struct ScatterGrad {
  std::vector<double> d_rows;
  std::vector<double> dw;
};
ScatterGrad scatter_grad(std::span<const float> dy, std::span<const float> rows, const Permutation&,
                         std::span<const double> weights, int64_t tokens, int top_k, int hidden);

}  // namespace dmoe::reference

// dmoe/layer_reference.hpp — the dropless MoE layer on the CPU, forward and backward, in fp64
// (dmoe-semantics.md). It is the oracle of the GPU layer and the `--device cpu` path of `dmoe run`.
// Dropless by construction: every token reaches its K experts; no padding enters the arithmetic.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "dmoe/routing_reference.hpp"
#include "dmoe/spec.hpp"

namespace dmoe::reference {

struct LayerConfig {
  int64_t tokens = 0, hidden = 0, ffn = 0, experts = 0, top_k = 1;
  Activation activation = Activation::GeluTanh;  // None: identity
  bool gated = false;                            // GLU / SwiGLU: act(x·W1ᵀ) ⊙ (x·V1ᵀ)
  int renorm_p = 0;                              // router weights renormalized by their p-norm (0: off)
  double lbl_weight = 0.01, z_weight = 0.0;      // load-balancing and z-loss weights
};

// Host copies of the layer's inputs, MegaBlocks' layout: x [T, H], router [E, H], w1/w2/v1 [E·F, H]
// (expert e's rows e·F … (e+1)·F − 1); v1 is read only when gated.
// Jitter (optional): noise [T, H], the factors U(1 − ε, 1 + ε) (jitter_noise); the router's input is then
// x ⊙ noise (the experts still see x), its gradient reaches x times the noise, and dWr uses it. router_x
// (optional, with noise) is that input as the layer under test rounded it, used instead of x ⊙ noise for
// the logits and dWr; directional_check ignores it (it perturbs x).
// expert_bias (optional, [E]): the balancing bias of the top-K selection (routing_reference.hpp: route).
struct LayerParams {
  std::span<const float> x, router, w1, w2, v1;
  std::span<const float> noise = {}, router_x = {};
  std::span<const float> expert_bias = {};
};

// The jitter factors of elements [0, n) for a key (jitter_key in routing_args.cuh: the device's noise).
std::vector<float> jitter_noise(int64_t n, float eps, uint64_t key);

// The forward pass and what the backward pass needs.
struct LayerForward {
  std::vector<double> y;       // [T, H]
  std::vector<double> logits;  // [T, E] = x · routerᵀ
  RouterResult routing;        // expert ids, weights, counts, lbl, z
  std::vector<double> h, g;    // [T·K, F]: pre-activation x·W1ᵀ and (gated) x·V1ᵀ of each assignment
  std::vector<double> o;       // [T·K, H]: each assignment's expert output, before the routing weight
};

struct LayerGrads {
  std::vector<double> dx, drouter, dw1, dw2, dv1;  // shapes of x, router, w1, w2, v1 (dv1 empty unless gated)
};

// Throws InvalidArgument for sizes that do not match the config.
LayerForward layer_forward(const LayerConfig&, const LayerParams&);
// Gradients of L = ⟨dy, y⟩ + d_lbl · lbl + d_z · z (the losses already carry their weights). The expert
// selection is held fixed, as autograd does through top-k.
LayerGrads layer_backward(const LayerConfig&, const LayerParams&, const LayerForward&, std::span<const float> dy,
                          double d_lbl = 1.0, double d_z = 1.0);

// Which piece of the piecewise-smooth loss a forward pass evaluated: each token's selected experts (as a
// set: the order of the K slots does not change the loss) and, for ReLU, the active units of each
// selected expert. Two passes with equal pieces lie where the loss is differentiable between them.
std::vector<int32_t> layer_piece(const LayerConfig&, const LayerForward&);

// The backward pass checked along one random direction per parameter tensor: the analytic ⟨∇L, v⟩
// against the central difference (L(θ + εv) − L(θ − εv)) / 2ε, with L as in layer_backward. Two forward
// passes per tensor, so it scales to layers far too large for per-coordinate checks.
struct DirectionalCheck {
  const char* tensor;
  double analytic, numeric, rel_err;
};
std::vector<DirectionalCheck> directional_check(const LayerConfig&, const LayerParams&, const LayerGrads&,
                                                std::span<const float> dy, uint64_t seed);

// The activation as an Epilogue-independent function (None: identity), and its derivative.
double activate(Activation, double x);
double activate_grad(Activation, double x);

}  // namespace dmoe::reference

namespace dmoe::reference {

// A sampled oracle for layers too large for layer_forward / layer_backward on the CPU: the results of a
// step computed elsewhere (the GPU), at a few tokens and a few weight rows, against fp64 recomputations
// that cost O(K·H·F) per token and O(tokens of the expert · H) per weight row.
//
// The routing decision (which experts) is taken from the step under test, since the GPU's fp32 logits
// may break near-ties differently; the check verifies that each chosen expert set is a top-K set of the
// fp64 scores (plus LayerParams::expert_bias) up to `tie` (relative), and recomputes the routing weights in fp64 at the sampled tokens.
// The weight rows use the step's routing weights for every token (their fp64 check is at the sampled
// tokens). The router weight's gradient needs every token and is not sampled.
struct LayerSample {
  std::vector<int64_t> tokens;  // sampled tokens t
  std::vector<int64_t> rows;    // sampled rows r of the [E·F, H] weights
  // The step's values: y, dx at the sampled tokens and dw1, dw2, (dv1) at the sampled rows, [samples, H].
  std::vector<double> y, dx, dw1, dw2, dv1;
};

struct SampleResult {
  double y = 0, dx = 0, dw1 = 0, dw2 = 0, dv1 = 0;  // relative Frobenius errors over the samples
  double weights = 0;                               // max |w_gpu − w_ref| at the sampled tokens
  int64_t not_top_k = 0;                            // sampled tokens whose expert set is not a top-K set
};

// expert_ids, weights: the step's routing [T·K]; counts: its tokens per expert [E] (for the
// load-balancing gradient). `threads`: 0 = every core.
SampleResult check_layer_sample(const LayerConfig&, const LayerParams&, std::span<const float> dy,
                                std::span<const int32_t> expert_ids, std::span<const float> weights,
                                std::span<const int32_t> counts, const LayerSample&, int threads = 0);

}  // namespace dmoe::reference

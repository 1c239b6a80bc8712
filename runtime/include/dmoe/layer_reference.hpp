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
struct LayerParams {
  std::span<const float> x, router, w1, w2, v1;
};

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

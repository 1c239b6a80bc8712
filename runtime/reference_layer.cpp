// The dMoE layer on the CPU in fp64: router → top-k → each assignment through its expert's MLP →
// weighted sum; and the analytic backward pass. Straightforward loops: the oracle, not a fast path.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "dmoe/layer_reference.hpp"
#include "dmoe/reference.hpp"
#include "dmoe/routing_args.cuh"

namespace dmoe::reference {
namespace {

void check(const LayerConfig& c, const LayerParams& p) {
  if (c.tokens <= 0 || c.hidden <= 0 || c.ffn <= 0 || c.experts <= 0 || c.top_k <= 0 || c.top_k > c.experts)
    throw InvalidArgument(fmt::format("layer config: tokens={} hidden={} ffn={} experts={} top_k={} (all positive, "
                                      "top_k ≤ experts)", c.tokens, c.hidden, c.ffn, c.experts, c.top_k));
  auto size = [](const char* what, std::span<const float> s, int64_t want) {
    if (int64_t(s.size()) != want)
      throw InvalidArgument(fmt::format("layer parameter {} has {} elements, expected {}", what, s.size(), want));
  };
  const int64_t ef = c.experts * c.ffn;
  size("x", p.x, c.tokens * c.hidden);
  size("router", p.router, c.experts * c.hidden);
  size("w1", p.w1, ef * c.hidden);
  size("w2", p.w2, ef * c.hidden);
  if (c.gated) size("v1", p.v1, ef * c.hidden);
  if (!p.noise.empty()) size("noise", p.noise, c.tokens * c.hidden);
  if (!p.expert_bias.empty()) size("expert_bias", p.expert_bias, c.experts);
  if (!p.router_x.empty()) {
    if (p.noise.empty()) throw InvalidArgument("layer parameter router_x is set without noise");
    size("router_x", p.router_x, c.tokens * c.hidden);
  }
}

// The router's input: x, or jittered (the caller's rounding of it when given).
std::vector<double> router_input(const LayerConfig& c, const LayerParams& p) {
  std::vector<double> xr(c.tokens * c.hidden);
  for (size_t i = 0; i < xr.size(); ++i)
    xr[i] = !p.router_x.empty() ? double(p.router_x[i]) : p.noise.empty() ? double(p.x[i]) : double(p.x[i]) * p.noise[i];
  return xr;
}

// Row r of a [rows, H] matrix dotted with a length-H vector.
double dot(const float* row, const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(row[i]) * v[i];
  return s;
}

}  // namespace

double activate(Activation a, double x) { return activation(epilogue_of(a), x); }

std::vector<float> jitter_noise(int64_t n, float eps, uint64_t key) {
  std::vector<float> u(n);
  for (int64_t i = 0; i < n; ++i) u[i] = jitter_factor(uint32_t(key), uint32_t(key >> 32), uint64_t(i), eps);
  return u;
}
double activate_grad(Activation a, double x) { return activation_grad(epilogue_of(a), x); }

LayerForward layer_forward(const LayerConfig& c, const LayerParams& p) {
  check(c, p);
  const int64_t T = c.tokens, H = c.hidden, F = c.ffn, E = c.experts, K = c.top_k;
  LayerForward f;
  f.logits.assign(T * E, 0.0);
  const std::vector<double> xr = router_input(c, p);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      for (int64_t d = 0; d < H; ++d) f.logits[t * E + e] += double(p.router[e * H + d]) * xr[t * H + d];
  f.routing = route(f.logits, T, int(E), int(K), c.renorm_p, c.lbl_weight, c.z_weight, p.expert_bias);
  f.y.assign(T * H, 0.0);
  f.h.assign(T * K * F, 0.0);
  if (c.gated) f.g.assign(T * K * F, 0.0);
  f.o.assign(T * K * H, 0.0);
  std::vector<double> a(F);
  for (int64_t i = 0; i < T * K; ++i) {
    const int64_t t = i / K, e = f.routing.expert_ids[i];
    const float* xt = &p.x[t * H];
    for (int64_t j = 0; j < F; ++j) {
      const int64_t row = (e * F + j) * H;
      f.h[i * F + j] = dot(&p.w1[row], xt, H);
      a[j] = activate(c.activation, f.h[i * F + j]);
      if (c.gated) {
        f.g[i * F + j] = dot(&p.v1[row], xt, H);
        a[j] *= f.g[i * F + j];
      }
    }
    double* o = &f.o[i * H];
    for (int64_t j = 0; j < F; ++j)
      for (int64_t d = 0; d < H; ++d) o[d] += a[j] * p.w2[(e * F + j) * H + d];
    for (int64_t d = 0; d < H; ++d) f.y[t * H + d] += f.routing.weights[i] * o[d];
  }
  return f;
}

LayerGrads layer_backward(const LayerConfig& c, const LayerParams& p, const LayerForward& f,
                          std::span<const float> dy, double d_lbl, double d_z) {
  check(c, p);
  const int64_t T = c.tokens, H = c.hidden, F = c.ffn, E = c.experts, K = c.top_k;
  if (int64_t(dy.size()) != T * H)
    throw InvalidArgument(fmt::format("dy has {} elements, expected {}", dy.size(), T * H));
  LayerGrads g;
  g.dx.assign(T * H, 0.0);
  g.drouter.assign(E * H, 0.0);
  g.dw1.assign(E * F * H, 0.0);
  g.dw2.assign(E * F * H, 0.0);
  if (c.gated) g.dv1.assign(E * F * H, 0.0);
  std::vector<double> dw(T * K), da(F);
  for (int64_t i = 0; i < T * K; ++i) {
    const int64_t t = i / K, e = f.routing.expert_ids[i];
    const double w = f.routing.weights[i];
    const float* dyt = &dy[t * H];
    const float* xt = &p.x[t * H];
    double s = 0;
    for (int64_t d = 0; d < H; ++d) s += f.o[i * H + d] * dyt[d];
    dw[i] = s;
    // do = w · dy_t; da = W2_e · do; dW2_e[j] += a_j · do.
    for (int64_t j = 0; j < F; ++j) {
      const int64_t row = (e * F + j) * H;
      const double hj = f.h[i * F + j];
      const double act = activate(c.activation, hj);
      const double aj = c.gated ? act * f.g[i * F + j] : act;
      double acc = 0;
      for (int64_t d = 0; d < H; ++d) {
        acc += p.w2[row + d] * w * dyt[d];
        g.dw2[row + d] += aj * w * dyt[d];
      }
      da[j] = acc;
    }
    for (int64_t j = 0; j < F; ++j) {
      const int64_t row = (e * F + j) * H;
      const double hj = f.h[i * F + j];
      const double dh = c.gated ? da[j] * f.g[i * F + j] * activate_grad(c.activation, hj)
                                : da[j] * activate_grad(c.activation, hj);
      for (int64_t d = 0; d < H; ++d) {
        g.dw1[row + d] += dh * xt[d];
        g.dx[t * H + d] += dh * p.w1[row + d];
      }
      if (c.gated) {
        const double dgate = da[j] * activate(c.activation, hj);
        for (int64_t d = 0; d < H; ++d) {
          g.dv1[row + d] += dgate * xt[d];
          g.dx[t * H + d] += dgate * p.v1[row + d];
        }
      }
    }
  }
  // The router: logits' gradient from dw and the losses, then through logits = x_r · routerᵀ, x_r = x
  // (⊙ noise with jitter).
  const std::vector<double> dlogits = router_grad(f.logits, f.routing.expert_ids, dw, T, int(E), int(K),
                                                  c.renorm_p, c.lbl_weight, c.z_weight, d_lbl, d_z);
  const std::vector<double> xr = router_input(c, p);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const double gl = dlogits[t * E + e];
      for (int64_t d = 0; d < H; ++d) {
        g.drouter[e * H + d] += gl * xr[t * H + d];
        g.dx[t * H + d] += gl * p.router[e * H + d] * (p.noise.empty() ? 1.0 : double(p.noise[t * H + d]));
      }
    }
  return g;
}

std::vector<int32_t> layer_piece(const LayerConfig& c, const LayerForward& f) {
  const int64_t K = c.top_k, F = c.ffn;
  std::vector<int32_t> piece;
  std::vector<int64_t> slots(K);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t k = 0; k < K; ++k) slots[k] = t * K + k;
    std::sort(slots.begin(), slots.end(),
              [&](int64_t a, int64_t b) { return f.routing.expert_ids[a] < f.routing.expert_ids[b]; });
    for (int64_t i : slots) {
      piece.push_back(f.routing.expert_ids[i]);
      if (c.activation == Activation::Relu)
        for (int64_t j = 0; j < F; ++j) piece.push_back(f.h[i * F + j] > 0);
    }
  }
  return piece;
}

std::vector<DirectionalCheck> directional_check(const LayerConfig& c, const LayerParams& params, const LayerGrads& g,
                                                std::span<const float> dy, uint64_t seed) {
  LayerParams p = params;
  p.router_x = {};  // x ⊙ noise, recomputed as x moves
  // The loss, and whether it was evaluated in the unperturbed piece (no top-k switch, no ReLU kink).
  const std::vector<int32_t> base_piece = layer_piece(c, layer_forward(c, p));
  auto loss = [&](const LayerParams& q, bool& same_routing) {
    const LayerForward f = layer_forward(c, q);
    same_routing = layer_piece(c, f) == base_piece;
    double l = f.routing.lbl + f.routing.z;
    for (size_t i = 0; i < f.y.size(); ++i) l += f.y[i] * dy[i];
    return l;
  };
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  std::vector<DirectionalCheck> out;
  const struct {
    const char* name;
    std::span<const float> LayerParams::*field;
    const std::vector<double>* grad;
  } tensors[] = {{"x", &LayerParams::x, &g.dx},     {"router", &LayerParams::router, &g.drouter},
                 {"w1", &LayerParams::w1, &g.dw1}, {"w2", &LayerParams::w2, &g.dw2},
                 {"v1", &LayerParams::v1, &g.dv1}};
  for (const auto& t : tensors) {
    const std::span<const float> base = p.*t.field;
    if (base.empty() || t.grad->empty()) continue;
    // ε relative to the tensor's scale keeps the step well above fp32 rounding; it shrinks until the step
    // stays inside one piece (no top-k switch, no ReLU kink).
    double scale = 0;
    for (float v : base) scale = std::max(scale, double(std::abs(v)));
    std::vector<float> dir(base.size()), plus(base.size()), minus(base.size());
    for (float& d : dir) d = unit(rng);
    double eps = 1e-4 * std::max(scale, 1e-3), analytic = 0, numeric = 0;
    for (int attempt = 0; attempt < 8; ++attempt, eps /= 4) {
      analytic = 0;
      for (size_t i = 0; i < base.size(); ++i) {
        plus[i] = float(base[i] + eps * dir[i]);
        minus[i] = float(base[i] - eps * dir[i]);
        analytic += (*t.grad)[i] * (double(plus[i]) - double(minus[i])) / 2;  // the step fp32 really took
      }
      LayerParams q = p;
      bool same_plus = false, same_minus = false;
      q.*t.field = plus;
      const double lp = loss(q, same_plus);
      q.*t.field = minus;
      const double lm = loss(q, same_minus);
      numeric = (lp - lm) / 2;
      if (same_plus && same_minus) break;
    }
    const double rel = std::abs(analytic - numeric) / std::max(std::abs(numeric), 1e-12);
    out.push_back({t.name, analytic / eps, numeric / eps, rel});
  }
  return out;
}

}  // namespace dmoe::reference

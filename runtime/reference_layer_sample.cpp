// The sampled fp64 oracle of a layer step (layer_reference.hpp: check_layer_sample).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "dmoe/layer_reference.hpp"
#include "dmoe/reference.hpp"
#include "dmoe/routing_reference.hpp"
#include "parallel.hpp"

namespace dmoe::reference {
namespace {

using detail::parallel_for;

double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace

SampleResult check_layer_sample(const LayerConfig& c, const LayerParams& p, std::span<const float> dy,
                                std::span<const int32_t> expert_ids, std::span<const float> weights,
                                std::span<const int32_t> counts, const LayerSample& s, int threads) {
  const int64_t T = c.tokens, H = c.hidden, F = c.ffn, E = c.experts, K = c.top_k;
  if (int64_t(expert_ids.size()) != T * K || int64_t(weights.size()) != T * K || int64_t(counts.size()) != E)
    throw InvalidArgument(fmt::format("check_layer_sample: {} ids, {} weights and {} counts for T·K = {}, E = {}",
                                      expert_ids.size(), weights.size(), counts.size(), T * K, E));
  const size_t nt = s.tokens.size(), nr = s.rows.size();
  if (s.y.size() != nt * H || s.dx.size() != nt * H || s.dw1.size() != nr * H || s.dw2.size() != nr * H ||
      (c.gated && s.dv1.size() != nr * H))
    throw InvalidArgument("check_layer_sample: sampled values do not match the sample's sizes");
  if ((!p.noise.empty() && int64_t(p.noise.size()) != T * H) || (!p.router_x.empty() && int64_t(p.router_x.size()) != T * H))
    throw InvalidArgument(fmt::format("check_layer_sample: noise and router_x hold {} and {} values, expected T·H = {}",
                                      p.noise.size(), p.router_x.size(), T * H));
  if (!p.expert_bias.empty() && int64_t(p.expert_bias.size()) != E)
    throw InvalidArgument(fmt::format("check_layer_sample: expert_bias holds {} values, expected E = {}",
                                      p.expert_bias.size(), E));
  const float* x = p.x.data();
  SampleResult out;
  std::vector<double> y_ref(nt * H), dx_ref(nt * H), w_err(nt, 0);
  std::vector<char> bad(nt, 0);
  const std::vector<int64_t> counts64(counts.begin(), counts.end());

  parallel_for(int64_t(nt), threads, [&](int64_t si) {
    const int64_t t = s.tokens[si];
    const float* xt = x + t * H;
    const float* dyt = dy.data() + t * H;
    // Router in fp64: scores, the chosen set's weights.
    std::vector<double> logit(E, 0.0), prob(E), w(K), xr(H);
    // The router's input: x, or jittered (LayerParams::noise, router_x).
    for (int64_t j = 0; j < H; ++j)
      xr[j] = !p.router_x.empty() ? double(p.router_x[t * H + j])
              : p.noise.empty()   ? double(xt[j])
                                  : double(xt[j]) * p.noise[t * H + j];
    for (int64_t e = 0; e < E; ++e)
      for (int64_t j = 0; j < H; ++j) logit[e] += xr[j] * p.router[e * H + j];
    const double lse = softmax_row(logit, prob);
    const std::span<const int32_t> ids = expert_ids.subspan(t * K, K);
    std::vector<char> chosen(E, 0);
    // The selection's keys: the probabilities, plus the balancing bias.
    auto key = [&](int64_t e) { return prob[e] + (p.expert_bias.empty() ? 0.0 : double(p.expert_bias[e])); };
    double min_chosen = INFINITY, max_other = -INFINITY;
    for (int64_t k = 0; k < K; ++k) chosen[ids[k]] = 1, min_chosen = std::min(min_chosen, key(ids[k]));
    for (int64_t e = 0; e < E; ++e)
      if (!chosen[e]) max_other = std::max(max_other, key(e));
    if (max_other > min_chosen + 1e-3 * std::abs(min_chosen)) bad[si] = 1;  // relative tie tolerance
    routing_weights_row(prob, ids, c.renorm_p, w);
    for (int64_t k = 0; k < K; ++k) w_err[si] = std::max(w_err[si], std::abs(w[k] - double(weights[t * K + k])));
    // Experts: forward, then the gradients back to x.
    std::vector<double> a(F), g(F), h(F), dh(F), dxv(H, 0.0), dwk(K);
    double* yt = y_ref.data() + si * H;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = ids[k];
      for (int64_t f = 0; f < F; ++f) {
        a[f] = dot(xt, p.w1.data() + (e * F + f) * H, H);
        g[f] = c.gated ? dot(xt, p.v1.data() + (e * F + f) * H, H) : 1.0;
        h[f] = activate(c.activation, a[f]) * g[f];
      }
      std::vector<double> o(H, 0.0);
      for (int64_t f = 0; f < F; ++f) {
        const float* w2r = p.w2.data() + (e * F + f) * H;
        for (int64_t j = 0; j < H; ++j) o[j] += h[f] * w2r[j];
      }
      double d = 0;
      for (int64_t j = 0; j < H; ++j) yt[j] += w[k] * o[j], d += o[j] * dyt[j];
      dwk[k] = d;
      for (int64_t f = 0; f < F; ++f) {
        const double dhf = w[k] * dot(dyt, p.w2.data() + (e * F + f) * H, H);
        const double da = dhf * g[f] * activate_grad(c.activation, a[f]);
        const float* w1r = p.w1.data() + (e * F + f) * H;
        for (int64_t j = 0; j < H; ++j) dxv[j] += da * w1r[j];
        if (c.gated) {
          const double dg = dhf * activate(c.activation, a[f]);
          const float* v1r = p.v1.data() + (e * F + f) * H;
          for (int64_t j = 0; j < H; ++j) dxv[j] += dg * v1r[j];
        }
      }
    }
    // The router's share of dx: dlogits (router_grad's, with the step's counts) · Wr.
    std::vector<double> dlogits(E);
    router_grad_row(prob, lse, ids, dwk, counts64, T, c.renorm_p, c.lbl_weight, c.z_weight, 1.0, 1.0, dlogits);
    for (int64_t e = 0; e < E; ++e) {
      const float* wr = p.router.data() + e * H;
      for (int64_t j = 0; j < H; ++j) dxv[j] += dlogits[e] * wr[j] * (p.noise.empty() ? 1.0 : double(p.noise[t * H + j]));
    }
    std::copy(dxv.begin(), dxv.end(), dx_ref.begin() + si * H);
  });

  // Weight rows r = e·F + f: sums over the tokens routed to e, with the step's routing weights.
  std::vector<std::vector<int64_t>> by_expert(E);  // assignments i = t·K + k of each expert
  for (int64_t i = 0; i < T * K; ++i) by_expert[expert_ids[i]].push_back(i);
  std::vector<double> dw1_ref(nr * H, 0.0), dw2_ref(nr * H, 0.0), dv1_ref(c.gated ? nr * H : 0, 0.0);
  parallel_for(int64_t(nr), threads, [&](int64_t si) {
    const int64_t r = s.rows[si], e = r / F;
    const float* w1r = p.w1.data() + r * H;
    const float* w2r = p.w2.data() + r * H;
    const float* v1r = c.gated ? p.v1.data() + r * H : nullptr;
    double* d1 = dw1_ref.data() + si * H;
    double* d2 = dw2_ref.data() + si * H;
    double* dv = c.gated ? dv1_ref.data() + si * H : nullptr;
    for (int64_t i : by_expert[e]) {
      const float* xt = x + (i / K) * H;
      const float* dyt = dy.data() + (i / K) * H;
      const double wk = weights[i];
      const double a = dot(xt, w1r, H), g = c.gated ? dot(xt, v1r, H) : 1.0;
      const double act = activate(c.activation, a);
      const double h = act * g, dh = wk * dot(dyt, w2r, H);
      const double da = dh * g * activate_grad(c.activation, a);
      for (int64_t j = 0; j < H; ++j) {
        d2[j] += wk * h * dyt[j];
        d1[j] += da * xt[j];
        if (dv) dv[j] += dh * act * xt[j];
      }
    }
  });

  out.y = relative_error(y_ref, s.y);
  out.dx = relative_error(dx_ref, s.dx);
  out.dw1 = relative_error(dw1_ref, s.dw1);
  out.dw2 = relative_error(dw2_ref, s.dw2);
  if (c.gated) out.dv1 = relative_error(dv1_ref, s.dv1);
  for (double v : w_err) out.weights = std::max(out.weights, v);
  for (char b : bad) out.not_top_k += b;
  return out;
}

}  // namespace dmoe::reference

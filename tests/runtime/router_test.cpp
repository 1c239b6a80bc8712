// GPU tests of the router's kernels (Jitter, Router, Bins, RouterGrad) against the CPU reference.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "dmoe/routing.hpp"
#include "dmoe/routing_reference.hpp"
#include "test_util.hpp"

using namespace dmoe;

namespace {

using test::cache;
using test::device;

using test::arch;

enum class Logits { Normal, Zipf, OneExpert };

struct Case {
  int64_t tokens;
  int experts, top_k, renorm_p;
  Logits logits = Logits::Normal;
  int block = 128;
  DType dtype = DType::BF16;  // RouterGrad's low-precision copy of dlogits
};

std::string describe(const Case& c) {
  const char* kind = c.logits == Logits::Zipf ? " zipf" : c.logits == Logits::OneExpert ? " one-expert" : "";
  return "T=" + std::to_string(c.tokens) + " E=" + std::to_string(c.experts) + " K=" + std::to_string(c.top_k) +
         " P=" + std::to_string(c.renorm_p) + " B=" + std::to_string(c.block) + kind + " " +
         std::string(to_string(c.dtype));
}

// Random logits, never zero. Zipf: expert e's logit is biased by −1.1·ln(e + 1), so its share of the
// routing falls off as a power of its rank. OneExpert: expert E/2 wins every token.
std::vector<float> make_logits(const Case& c) {
  std::normal_distribution<float> dist(0.f, 1.5f);
  std::vector<float> v(c.tokens * c.experts);
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int e = 0; e < c.experts; ++e) {
      float x = dist(test::rng());
      if (c.logits == Logits::Zipf) x -= 1.1f * std::log(float(e + 1));
      if (c.logits == Logits::OneExpert && e == c.experts / 2) x += 30.f;
      if (x == 0.f) x = 0.25f;
      v[t * c.experts + e] = x;
    }
  return v;
}

using test::download;

double rel(double out, double ref) { return std::abs(out - ref) / std::max(std::abs(ref), 1e-30); }

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights, losses;
};

// Router then Bins on the device, checked against the reference; returns the device routing.
Routed check_routing(const Case& c, RoutingWorkspace& ws, const std::vector<float>& logits, DeviceBuffer& dlog,
                     double lbl_w, double z_w) {
  Device& dev = device();
  const int64_t T = c.tokens, E = c.experts, K = c.top_k, chunks = route_chunks(T);
  const RoutingState& s = ws.state();
  // Poison every output: 0xff… is −1 as int32 and NaN as fp32.
  dev.fill_u8(s.expert_ids, 0xff, std::max<int64_t>(T * K, 1) * 4);
  dev.fill_u8(s.weights, 0xff, std::max<int64_t>(T * K, 1) * 4);
  dev.fill_u8(s.chunk_hist, 0xff, std::max<int64_t>(chunks * E, 1) * 4);
  dev.fill_u8(s.chunk_offsets, 0xff, std::max<int64_t>(chunks * E, 1) * 4);
  dev.fill_u8(s.chunk_scores, 0xff, std::max<int64_t>(chunks * E, 1) * 4);
  dev.fill_u8(s.chunk_z, 0xff, std::max<int64_t>(chunks, 1) * 4);
  for (void* p : {(void*)s.counts, (void*)s.bins, (void*)s.padded_bins}) dev.fill_u8(p, 0xff, E * 4);
  dev.fill_u8(s.block_rows, 0xff, 4);
  dev.fill_u8(s.losses, 0xff, 8);

  RoutingArgs args{};
  args.logits = static_cast<const float*>(dlog.get());
  args.s = s;
  args.tokens = static_cast<int32_t>(T);
  args.max_rows = ws.max_rows();
  args.lbl_weight = static_cast<float>(lbl_w);
  args.z_weight = static_cast<float>(z_w);
  launch_routing(cache(), ws.spec(Op::Router, arch()), args, nullptr);
  dev.synchronize();
  const std::vector<int32_t> hist = download<int32_t>(s.chunk_hist, chunks * E);
  launch_routing(cache(), ws.spec(Op::Bins, arch()), args, nullptr);
  dev.synchronize();

  Routed out;
  out.ids = download<int32_t>(s.expert_ids, T * K);
  out.weights = download<float>(s.weights, T * K);
  out.losses = download<float>(s.losses, 2);
  const auto prefix = download<int32_t>(s.chunk_offsets, chunks * E);
  CHECK(download<int32_t>(s.chunk_hist, chunks * E) == hist);  // Bins leaves the histogram as it was
  const auto scores = download<float>(s.chunk_scores, chunks * E);
  const auto zs = download<float>(s.chunk_z, chunks);
  const auto counts = download<int32_t>(s.counts, E);
  const auto bins = download<int32_t>(s.bins, E);
  const auto padded = download<int32_t>(s.padded_bins, E);
  const int32_t block_rows = download<int32_t>(s.block_rows, 1)[0];

  const reference::RouterResult ref =
      reference::route(logits, T, static_cast<int>(E), static_cast<int>(K), c.renorm_p, lbl_w, z_w);

  // Expert ids: equal to the reference, except that experts whose probabilities tie within 1e-6 may
  // come in either order. Weights: relative error ≤ 1e-5 against the fp64 weight of the device's expert.
  std::vector<double> p(E), ref_scores(chunks * E, 0.0), ref_z(chunks, 0.0);
  int64_t bad_ids = 0, bad_weights = 0, tie_swaps = 0;
  double worst_w = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.data() + t * E;
    const double m = *std::max_element(l, l + E);
    double sum = 0;
    for (int e = 0; e < E; ++e) sum += p[e] = std::exp(double(l[e]) - m);
    for (int e = 0; e < E; ++e) {
      p[e] /= sum;
      ref_scores[(t / kRouteChunkTokens) * E + e] += p[e];
    }
    const double lse = m + std::log(sum);
    ref_z[t / kRouteChunkTokens] += lse * lse;
    bool same = true;
    std::vector<bool> seen(E, false);
    double norm = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t d = out.ids[t * K + k], r = ref.expert_ids[t * K + k];
      if (d < 0 || d >= E || seen[d]) {
        ++bad_ids;
        same = false;
        continue;
      }
      seen[d] = true;
      if (d != r) {
        same = false;
        if (std::abs(p[d] - p[r]) <= 1e-6) ++tie_swaps;
        else ++bad_ids;
      }
      norm += c.renorm_p == 2 ? p[d] * p[d] : p[d];
    }
    if (c.renorm_p == 2) norm = std::sqrt(norm);
    for (int64_t k = 0; k < K; ++k) {
      const int32_t d = out.ids[t * K + k];
      if (d < 0 || d >= E) continue;
      const double want = same ? ref.weights[t * K + k] : c.renorm_p == 0 ? p[d] : p[d] / norm;
      const double err = rel(out.weights[t * K + k], want);
      worst_w = std::max(worst_w, std::isnan(err) ? INFINITY : err);
      bad_weights += !(err <= 1e-5);
    }
  }
  INFO("worst weight rel err " << worst_w << ", tie swaps " << tie_swaps);
  CHECK(bad_ids == 0);
  CHECK(bad_weights == 0);

  // Counts, bins, padded bins, block rows and chunk histograms: exact, from the device's own routing.
  std::vector<int64_t> want_counts(E, 0), want_hist(chunks * E, 0);
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t d = std::clamp<int32_t>(out.ids[i], 0, int32_t(E - 1));
    ++want_counts[d];
    ++want_hist[(i / K / kRouteChunkTokens) * E + d];
  }
  CHECK(std::accumulate(want_counts.begin(), want_counts.end(), int64_t{0}) == T * K);
  int64_t bad_counts = 0, bad_hist = 0, bad_prefix = 0, run = 0, padded_run = 0;
  for (int64_t e = 0; e < E; ++e) {
    run += want_counts[e];
    padded_run += (want_counts[e] + c.block - 1) / c.block * c.block;
    bad_counts += counts[e] != want_counts[e] || bins[e] != run || padded[e] != padded_run;
    int64_t prefix_e = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      bad_hist += hist[ch * E + e] != want_hist[ch * E + e];
      bad_prefix += prefix[ch * E + e] != prefix_e;
      prefix_e += want_hist[ch * E + e];
    }
  }
  CHECK(bad_counts == 0);
  CHECK(bad_hist == 0);
  CHECK(bad_prefix == 0);
  CHECK(block_rows == padded_run / c.block);
  CHECK(padded_run % c.block == 0);

  // Chunk partials (fp32 sums of fp32 softmax) and the losses.
  std::vector<double> scores_d(scores.begin(), scores.end()), zs_d(zs.begin(), zs.end());
  const double err_scores = reference::relative_error(ref_scores, scores_d);
  const double err_z = reference::relative_error(ref_z, zs_d);
  INFO("chunk scores rel err " << err_scores << ", chunk z rel err " << err_z);
  CHECK(err_scores <= 1e-5);
  CHECK(err_z <= 1e-5);
  // The reference's loss, with the device's counts (identical unless a tie swapped the K-th expert).
  double want_lbl = ref.lbl;
  if (!std::equal(want_counts.begin(), want_counts.end(), ref.counts.begin())) {
    std::vector<double> score_sum(E, 0.0);
    for (int64_t i = 0; i < chunks * E; ++i) score_sum[i % E] += ref_scores[i];
    want_lbl = 0;
    for (int64_t e = 0; e < E; ++e) want_lbl += double(want_counts[e]) * score_sum[e] / double(T);
    want_lbl *= double(E) * lbl_w / (double(T) * double(K));
  }
  INFO("losses " << out.losses[0] << " " << out.losses[1] << " want " << want_lbl << " " << ref.z);
  CHECK(rel(out.losses[0], want_lbl) <= 1e-4);
  CHECK(rel(out.losses[1], ref.z) <= 1e-4);
  return out;
}

void run(const Case& c) {
  INFO(describe(c));
  Device& dev = device();
  MoeShape shape;
  shape.hidden = 64;
  shape.ffn = 2 * c.block;
  shape.experts = c.experts;
  shape.top_k = c.top_k;
  shape.block = c.block;
  shape.tokens = c.tokens;
  shape.dtype = c.dtype;
  RoutingWorkspace ws(dev, shape, c.renorm_p);
  const int64_t T = c.tokens, E = c.experts, K = c.top_k;

  const std::vector<float> logits = make_logits(c);
  DeviceBuffer dlog(dev, logits.size() * 4);
  dev.copy_to_device(dlog.get(), logits.data(), logits.size() * 4);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  const double lbl_w = 0.01 * u(test::rng()), z_w = 0.001 * u(test::rng());
  const Routed routed = check_routing(c, ws, logits, dlog, lbl_w, z_w);

  // RouterGrad on the device's routing, with random dw and loss gradients scaled so that every term
  // matters (the loss terms' gradients shrink as 1/T).
  std::vector<float> dw(T * K);
  std::vector<double> dw_d(T * K);
  std::uniform_real_distribution<float> g(-1.f, 1.f);
  for (int64_t i = 0; i < T * K; ++i) {
    dw[i] = g(test::rng());
    if (dw[i] == 0.f) dw[i] = 0.5f;
    dw_d[i] = dw[i];
  }
  const double d_lbl = double(T) * 10.0 * u(test::rng()), d_z = double(T) * 100.0 * u(test::rng());
  DeviceBuffer ddw(dev, dw.size() * 4), dgrad(dev, T * E * 4);
  dev.copy_to_device(ddw.get(), dw.data(), dw.size() * 4);
  dev.fill_u8(dgrad.get(), 0xff, T * E * 4);
  RoutingArgs args{};
  args.logits = static_cast<const float*>(dlog.get());
  args.dlogits = static_cast<float*>(dgrad.get());
  args.dweights = static_cast<float*>(ddw.get());
  args.s = ws.state();
  args.tokens = static_cast<int32_t>(T);
  args.max_rows = ws.max_rows();
  args.lbl_weight = static_cast<float>(lbl_w);
  args.z_weight = static_cast<float>(z_w);
  args.d_lbl = static_cast<float>(d_lbl);
  args.d_z = static_cast<float>(d_z);
  launch_routing(cache(), ws.spec(Op::RouterGrad, arch()), args, nullptr);
  dev.synchronize();
  const auto out = download<float>(dgrad.get(), T * E);
  const std::vector<double> ref =
      reference::router_grad(logits, routed.ids, dw_d, T, int(E), int(K), c.renorm_p, double(args.lbl_weight),
                             double(args.z_weight), double(args.d_lbl), double(args.d_z));
  const double err = reference::relative_error(ref, std::vector<double>(out.begin(), out.end()));
  INFO("router_grad rel Frobenius err " << err);
  CHECK(err <= 1e-5);

  // The low-precision copy (cuBLASLt's operand): the fp32 values rounded once, next to the fp32 ones
  // (which stay bit for bit the same) or alone (dlogits null).
  DeviceBuffer dlp(dev, T * E * 2);
  dev.fill_u8(dlp.get(), 0xff, T * E * 2);
  dev.fill_u8(dgrad.get(), 0xff, T * E * 4);
  args.dlogits_lp = dlp.get();
  launch_routing(cache(), ws.spec(Op::RouterGrad), args, nullptr);
  dev.synchronize();
  CHECK(download<float>(dgrad.get(), T * E) == out);
  const auto lp = download<uint16_t>(dlp.get(), T * E);
  int64_t not_rounded = 0;
  std::vector<double> lp_values(T * E);
  for (int64_t i = 0; i < T * E; ++i) {
    const uint16_t want = c.dtype == DType::BF16 ? reference::to_bf16(out[i]) : reference::to_fp16(out[i]);
    not_rounded += lp[i] != want;
    lp_values[i] = c.dtype == DType::BF16 ? reference::from_bf16(lp[i]) : reference::from_fp16(lp[i]);
  }
  CHECK(not_rounded == 0);
  const double lp_err = reference::relative_error(ref, lp_values);
  INFO("router_grad low-precision rel Frobenius err " << lp_err);
  CHECK(lp_err <= (c.dtype == DType::BF16 ? 1e-2 : 2e-3));
  dev.fill_u8(dlp.get(), 0xff, T * E * 2);
  args.dlogits = nullptr;
  launch_routing(cache(), ws.spec(Op::RouterGrad), args, nullptr);
  dev.synchronize();
  CHECK(download<uint16_t>(dlp.get(), T * E) == lp);
  // Outputs one element off a 16-byte boundary (the thread form's vector stores then fall back to
  // scalar ones): the same values bit for bit.
  {
    DeviceBuffer off32(dev, T * E * 4 + 16), off16(dev, T * E * 2 + 16);
    dev.fill_u8(off32.get(), 0xff, T * E * 4 + 16);
    dev.fill_u8(off16.get(), 0xff, T * E * 2 + 16);
    args.dlogits = reinterpret_cast<float*>(static_cast<char*>(off32.get()) + 4);
    args.dlogits_lp = static_cast<char*>(off16.get()) + 2;
    launch_routing(cache(), ws.spec(Op::RouterGrad), args, nullptr);
    dev.synchronize();
    const auto o32 = download<float>(off32.get(), T * E + 4);
    const auto o16 = download<uint16_t>(off16.get(), T * E + 8);
    CHECK(std::equal(out.begin(), out.end(), o32.begin() + 1,
                     [](float a, float b) { return std::memcmp(&a, &b, 4) == 0; }));
    CHECK(std::equal(lp.begin(), lp.end(), o16.begin() + 1));
  }
  MESSAGE(describe(c) << ": router_grad rel err " << err << " (low precision " << lp_err << "), losses "
                      << routed.losses[0] << " " << routed.losses[1]);
}

}  // namespace

TEST_CASE("router: small and odd shapes") {
  run({1000, 8, 2, 0});      // T not a multiple of 256
  run({1, 16, 4, 1});        // one token
  run({300, 1, 1, 0});       // E = 1
  run({513, 8, 8, 1});       // K = E
  run({257, 64, 64, 2});     // K = E > 32: weights rescaled over several lanes
  run({255, 33, 5, 2, Logits::Normal, 64});
  run({777, 16, 1, 0, Logits::OneExpert, 256});  // every token to one expert
  run({1000, 8, 2, 0, Logits::Normal, 128, DType::FP16});
  run({255, 33, 5, 2, Logits::Normal, 64, DType::FP16});
}

TEST_CASE("router: model-sized expert counts") {
  run({4096 + 17, 256, 8, 1});  // DeepSeek-V3-like
  run({3000, 1000, 8, 2, Logits::Normal, 128, DType::FP16});
  run({600, 1024, 6, 0});  // the routing kernels' expert limit
  run({2000, 1000, 1000, 1});
}

TEST_CASE("router: Zipf-skewed routing") {
  run({5000, 64, 4, 0, Logits::Zipf});
  run({2048, 128, 2, 1, Logits::Zipf, 64});
}

TEST_CASE("router: many assignments") { run({262144, 64, 2, 1}); }

TEST_CASE("router: the presets' gradient shapes (RouterGrad's thread and warp forms)") {
  run({65536 + 5, 64, 1, 0});  // mb-46m-like
  run({8192, 64, 6, 1});       // fine-grained (the warp form)
  run({4099, 64, 2, 2});       // the thread form's largest K
  run({3001, 64, 3, 1});       // just past it: the warp form
  run({3001, 33, 2, 2});       // the thread form with E not a multiple of 4 (scalar loads and stores)
  // One expert at p = 1 in fp32 (its logit 30 above the rest): the true dlogits are tiny, so the
  // thread form must cancel g − dot as exactly as the warp form (layer_test caught a regrouping there).
  run({300, 4, 2, 0, Logits::OneExpert});
  run({300, 64, 2, 1, Logits::OneExpert});
}

TEST_CASE("router: T = 0 writes empty bins and zero losses") {
  Device& dev = device();
  MoeShape shape;
  shape.hidden = 64;
  shape.ffn = 128;
  shape.experts = 8;
  shape.top_k = 2;
  shape.tokens = 1;
  RoutingWorkspace ws(dev, shape, 1);
  const RoutingState& s = ws.state();
  for (void* p : {(void*)s.counts, (void*)s.bins, (void*)s.padded_bins}) dev.fill_u8(p, 0xff, 8 * 4);
  dev.fill_u8(s.block_rows, 0xff, 4);
  dev.fill_u8(s.losses, 0xff, 8);
  RoutingArgs args{};
  args.s = s;
  args.tokens = 0;
  args.max_rows = ws.max_rows();
  args.lbl_weight = 0.01f;
  args.z_weight = 0.001f;
  launch_routing(cache(), ws.spec(Op::Router, arch()), args, nullptr);  // no CTAs: nothing launched
  launch_routing(cache(), ws.spec(Op::Bins, arch()), args, nullptr);
  launch_routing(cache(), ws.spec(Op::RouterGrad, arch()), args, nullptr);
  dev.synchronize();
  CHECK(download<int32_t>(s.counts, 8) == std::vector<int32_t>(8, 0));
  CHECK(download<int32_t>(s.bins, 8) == std::vector<int32_t>(8, 0));
  CHECK(download<int32_t>(s.padded_bins, 8) == std::vector<int32_t>(8, 0));
  CHECK(download<int32_t>(s.block_rows, 1)[0] == 0);
  CHECK(download<float>(s.losses, 2) == std::vector<float>{0.f, 0.f});
}

TEST_CASE("router: bitwise deterministic from run to run") {
  const Case c{70000, 64, 4, 1};
  Device& dev = device();
  MoeShape shape;
  shape.hidden = 64;
  shape.ffn = 128;
  shape.experts = c.experts;
  shape.top_k = c.top_k;
  shape.tokens = c.tokens;
  RoutingWorkspace ws(dev, shape, c.renorm_p);
  const std::vector<float> logits = make_logits(c);
  DeviceBuffer dlog(dev, logits.size() * 4);
  dev.copy_to_device(dlog.get(), logits.data(), logits.size() * 4);
  const Routed a = check_routing(c, ws, logits, dlog, 0.01, 0.001);
  const Routed b = check_routing(c, ws, logits, dlog, 0.01, 0.001);
  CHECK(a.ids == b.ids);
  CHECK(std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * 4) == 0);
  CHECK(std::memcmp(a.losses.data(), b.losses.data(), 8) == 0);
}

TEST_CASE("jitter: bitwise equal to the reference rounded to the dtype") {
  Device& dev = device();
  for (DType dtype : {DType::BF16, DType::FP16})
    for (auto [T, H] : {std::pair{1, 64}, std::pair{1000, 192}, std::pair{4097, 1024}}) {
      INFO(to_string(dtype) << " T=" << T << " H=" << H);
      MoeShape shape;
      shape.hidden = H;
      shape.ffn = 128;
      shape.experts = 4;
      shape.top_k = 1;
      shape.tokens = T;
      shape.dtype = dtype;
      RoutingWorkspace ws(dev, shape);
      const int64_t n = int64_t(T) * H;
      const test::HostOperand x = test::random_operand(n, dtype);
      DeviceBuffer dx(dev, n * 2), dy(dev, n * 2);
      dev.copy_to_device(dx.get(), x.bits.data(), n * 2);
      dev.fill_u8(dy.get(), 0xff, n * 2);
      const float eps = 0.05f;
      const uint32_t seed_lo = uint32_t(test::rng()()), seed_hi = uint32_t(test::rng()());
      RoutingArgs args{};
      args.x = dx.get();
      args.y = dy.get();
      args.tokens = T;
      args.max_rows = ws.max_rows();
      args.jitter_eps = eps;
      args.seed_lo = seed_lo;
      args.seed_hi = seed_hi;
      const KernelSpec spec = ws.spec(Op::Jitter, arch());
      launch_routing(cache(), spec, args, nullptr);
      dev.synchronize();
      const auto y = download<uint16_t>(dy.get(), n);
      const std::vector<float> ref = reference::jitter(x.values, eps, seed_lo, seed_hi);
      int64_t mismatches = 0, changed = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t want = dtype == DType::BF16 ? reference::to_bf16(ref[i]) : reference::to_fp16(ref[i]);
        mismatches += y[i] != want;
        changed += y[i] != x.bits[i];
      }
      CHECK(mismatches == 0);
      CHECK(changed > n / 2);  // the noise is there

      // In place (x = y), the way the backward is applied to a gradient: the same bits.
      args.y = dx.get();
      launch_routing(cache(), spec, args, nullptr);
      dev.synchronize();
      CHECK(download<uint16_t>(dx.get(), n) == y);
    }
}

TEST_CASE("jitter: the key from device memory ({seed, offset}), the counter advanced, aux added in place") {
  using test::upload;
  Device& dev = device();
  for (auto [T, H] : {std::pair{777, 256}, std::pair{1, 64}}) {
    INFO("T=" << T << " H=" << H);
    MoeShape shape;
    shape.hidden = H;
    shape.ffn = 128;
    shape.experts = 4;
    shape.top_k = 1;
    shape.tokens = T;
    RoutingWorkspace ws(dev, shape);
    const int64_t n = int64_t(T) * H;
    const test::HostOperand x = test::random_operand(n, DType::BF16), aux = test::random_operand(n, DType::BF16);
    DeviceBuffer dx(dev, n * 2), dy(dev, n * 2), daux(dev, n * 2), state(dev, 16), next(dev, 16);
    upload(dx.get(), x.bits);
    upload(daux.get(), aux.bits);
    dev.fill_u8(dy.get(), 0xff, n * 2);
    const uint64_t base = test::rng()(), offset = test::rng()() >> 8;
    upload(state.get(), std::vector<uint64_t>{base, offset});
    upload(next.get(), std::vector<uint64_t>{7, 7});
    const float eps = 0.1f;
    RoutingArgs args = ws.args();
    args.x = dx.get();
    args.y = dy.get();
    args.jitter_eps = eps;
    args.seed_lo = 1, args.seed_hi = 2;  // ignored: the key comes from device memory
    args.jitter_seed = static_cast<const uint64_t*>(state.get());
    args.jitter_next = static_cast<uint64_t*>(next.get()) + 1;
    const KernelSpec& spec = ws.spec(Op::Jitter);
    launch_routing(cache(), spec, args, nullptr);
    dev.synchronize();
    const uint64_t key = jitter_key(base, offset);
    const std::vector<float> ref = reference::jitter(x.values, eps, uint32_t(key), uint32_t(key >> 32));
    const auto y = download<uint16_t>(dy.get(), n);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += y[i] != reference::to_bf16(ref[i]);
    CHECK(mismatches == 0);
    CHECK(download<uint64_t>(next.get(), 2) == std::vector<uint64_t>{7, offset + 1});
    CHECK(download<uint64_t>(state.get(), 2) == std::vector<uint64_t>{base, offset});
    CHECK(jitter_key(base, offset + 1) != key);

    // y = x·U + aux, in place over aux (the layer's dx += U ⊙ (dlogits·Wr)); no counter without jitter_next.
    args.aux = daux.get();
    args.y = daux.get();
    args.jitter_next = nullptr;
    launch_routing(cache(), spec, args, nullptr);
    dev.synchronize();
    const auto sum = download<uint16_t>(daux.get(), n);
    std::vector<double> want(n), got(n);
    for (int64_t i = 0; i < n; ++i) {
      want[i] = double(x.values[i]) * double(jitter_factor(uint32_t(key), uint32_t(key >> 32), uint64_t(i), eps)) +
                double(aux.values[i]);
      got[i] = reference::from_bf16(sum[i]);
    }
    const double err = reference::relative_error(want, got);
    INFO("x·U + aux relative Frobenius error " << err);
    CHECK(err < 1e-2);
    CHECK(download<uint64_t>(next.get(), 2) == std::vector<uint64_t>{7, offset + 1});
  }
}

TEST_CASE("router: the expert bias orders the top-k selection only; weights are the unbiased probabilities") {
  Device& dev = device();
  for (const Case& c : {Case{1000, 8, 2, 0}, Case{777, 64, 6, 1}, Case{300, 300, 4, 2}, Case{513, 16, 16, 1}}) {
    INFO(describe(c));
    MoeShape shape;
    shape.hidden = 64;
    shape.ffn = 2 * c.block;
    shape.experts = c.experts;
    shape.top_k = c.top_k;
    shape.block = c.block;
    shape.tokens = c.tokens;
    RoutingWorkspace ws(dev, shape, c.renorm_p);
    const int64_t T = c.tokens, E = c.experts, K = c.top_k;
    const std::vector<float> logits = make_logits(c);
    // A random bias of the scores' size, expert 1 lifted past every probability, expert E − 1 sunk.
    std::normal_distribution<float> dist(0.f, 0.05f);
    std::vector<float> bias(E);
    for (float& b : bias) b = dist(test::rng());
    bias[1] = 2.f;
    if (K < E) bias[E - 1] = -2.f;
    DeviceBuffer dlog(dev, logits.size() * 4), dbias(dev, E * 4);
    dev.copy_to_device(dlog.get(), logits.data(), logits.size() * 4);
    dev.copy_to_device(dbias.get(), bias.data(), E * 4);
    const RoutingState& s = ws.state();
    dev.fill_u8(s.expert_ids, 0xff, T * K * 4);
    dev.fill_u8(s.weights, 0xff, T * K * 4);
    RoutingArgs args = ws.args();
    args.logits = static_cast<const float*>(dlog.get());
    args.lbl_weight = 0.01f;
    args.z_weight = 0.001f;
    args.expert_bias = static_cast<const float*>(dbias.get());
    launch_routing(cache(), ws.spec(Op::Router), args, nullptr);
    launch_routing(cache(), ws.spec(Op::Bins), args, nullptr);
    dev.synchronize();
    const auto ids = download<int32_t>(s.expert_ids, T * K);
    const auto weights = download<float>(s.weights, T * K);
    const auto counts = download<int32_t>(s.counts, E);
    const auto losses = download<float>(s.losses, 2);
    const reference::RouterResult ref =
        reference::route(logits, T, int(E), int(K), c.renorm_p, 0.01, 0.001, bias);

    // Ids: the reference's, except keys (p + bias) tied within 1e-6 in either order; weights: the fp64
    // unbiased probabilities of the device's experts, renormalized; expert 1 always in, E − 1 never.
    std::vector<double> p(E);
    std::vector<int64_t> hist(E, 0);
    int64_t bad_ids = 0, bad_weights = 0, missing_1 = 0, has_last = 0;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> l(logits.begin() + t * E, logits.begin() + (t + 1) * E);
      reference::softmax_row(l, p);
      bool in1 = false;
      double norm = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t d = ids[t * K + k], r = ref.expert_ids[t * K + k];
        if (d < 0 || d >= E) {
          ++bad_ids;
          continue;
        }
        ++hist[d];
        in1 |= d == 1;
        has_last += K < E && d == E - 1;
        if (d != r && std::abs((p[d] + bias[d]) - (p[r] + bias[r])) > 1e-6) ++bad_ids;
        norm += c.renorm_p == 2 ? p[d] * p[d] : p[d];
      }
      missing_1 += !in1;
      if (c.renorm_p == 2) norm = std::sqrt(norm);
      for (int64_t k = 0; k < K; ++k) {
        const int32_t d = ids[t * K + k];
        if (d < 0 || d >= E) continue;
        const double want = c.renorm_p == 0 ? p[d] : p[d] / norm;
        bad_weights += !(rel(weights[t * K + k], want) <= 1e-5);
      }
    }
    CHECK(bad_ids == 0);
    CHECK(bad_weights == 0);
    CHECK(missing_1 == 0);
    CHECK(has_last == 0);
    CHECK(std::vector<int64_t>(counts.begin(), counts.end()) == hist);
    if (hist == ref.counts) CHECK(rel(losses[0], ref.lbl) <= 1e-4);  // biased counts, unbiased scores
  }
}

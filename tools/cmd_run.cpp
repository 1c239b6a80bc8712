// dmoe run: one dMoE layer step (forward + backward) on random data, checked and timed.
// --device gpu (the default where a GPU is usable) runs dmoe's GPU layer (dmoe/layer.hpp), times forward
// and backward and checks sampled tokens and weight rows against fp64 recomputations. --device cpu runs
// the fp64 reference layer (layer_reference.hpp) and checks its backward pass along random directions by
// central differences.
#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <random>

#include "cli.hpp"
#include "dmoe/layer_reference.hpp"
#include "dmoe/routing_args.cuh"
#include "layer_bench.hpp"

namespace dmoe::cli {
namespace {

struct RunFlags {
  std::string preset = "tiny", device = "auto", activation;
  int renorm_p = 0, reps = 10;
  double lbl_weight = 0.01, z_weight = 0.0, jitter_eps = 0.0;
  int64_t block = 0;
  int64_t tokens = 0, hidden = 0, ffn = 0, experts = 0, top_k = 0;
  bool glu = false, json = false, recompute = false;
  uint64_t seed = 0;
  CLI::Option* activation_opt = nullptr;
  CLI::Option* glu_opt = nullptr;
};

// The CPU reference runs about a GFLOP/s of scalar fp64: refuse what would take minutes.
constexpr double kCpuFlopLimit = 4e10;

int run_layer(const RunFlags& f) {
  MoeShape s = preset(f.preset);
  if (f.tokens) s.tokens = f.tokens;
  if (f.hidden) s.hidden = f.hidden;
  if (f.ffn) s.ffn = f.ffn;
  if (f.experts) s.experts = f.experts;
  if (f.top_k) s.top_k = f.top_k;
  if (f.activation_opt->count()) s.activation = parse_activation(f.activation);
  if (f.glu_opt->count()) s.gated = f.glu;
  if (f.block) s.block = f.block;
  validate(s);
  LayerOptions lo;
  lo.renorm_p = f.renorm_p;
  lo.lbl_weight = float(f.lbl_weight);
  lo.z_weight = float(f.z_weight);
  lo.recompute = f.recompute;
  lo.jitter_eps = float(f.jitter_eps);
  validate(s, lo);  // the layer's own limits, named, on either device
  if (f.device != "cpu" && f.device != "gpu" && f.device != "auto")
    throw InvalidArgument(fmt::format("unknown device '{}' (expected auto|gpu|cpu)", f.device));
  std::string device = f.device;
  if (device == "auto") {
    const std::string why = gpu_unavailable_reason();
    device = why.empty() ? "gpu" : "cpu";
    if (!why.empty()) fmt::print("dmoe run: no usable GPU ({}); running the CPU reference layer\n", why);
  }
  if (device == "gpu") {
    bench::LayerRunOptions o;
    o.label = f.preset;
    o.shape = s;
    o.layer = lo;
    o.json = f.json;
    o.reps = f.reps;
    o.seed = f.seed;
    const bench::LayerRunResult r = bench::run_layer_gpu(o);
    return r.verified ? 0 : 1;
  }

  reference::LayerConfig c;
  c.tokens = s.tokens, c.hidden = s.hidden, c.ffn = s.ffn, c.experts = s.experts, c.top_k = s.top_k;
  c.activation = s.activation, c.gated = s.gated;
  c.renorm_p = f.renorm_p, c.lbl_weight = f.lbl_weight, c.z_weight = f.z_weight;
  // Useful FLOPs of the expert MLPs: forward 2 (3 gated) products of 2·T·K·H·F, backward twice that.
  const double products = s.gated ? 3 : 2;
  const double fwd_flops = products * 2.0 * c.tokens * c.top_k * c.hidden * c.ffn;
  const double check_flops = 10 * fwd_flops;  // five directional checks, two forwards each
  if (3 * fwd_flops + check_flops > kCpuFlopLimit)
    throw InvalidArgument(fmt::format("{} tokens of this shape need ~{:.0f} GFLOP on the CPU reference, over the "
                                      "{:.0f} GFLOP limit of --device cpu; shrink it with --tokens",
                                      c.tokens, (3 * fwd_flops + check_flops) / 1e9, kCpuFlopLimit / 1e9));

  // Random parameters at the usual init scale (uniform ±1/√H), fresh unless --seed is given.
  const uint64_t seed = f.seed ? f.seed : std::random_device{}();
  std::mt19937_64 rng(seed);
  auto random = [&](int64_t n, float scale) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
  };
  const float init = 1.f / std::sqrt(float(c.hidden));
  const int64_t ef = c.experts * c.ffn;
  const std::vector<float> x = random(c.tokens * c.hidden, 1.f), router = random(c.experts * c.hidden, init),
                           w1 = random(ef * c.hidden, init), w2 = random(ef * c.hidden, init),
                           v1 = c.gated ? random(ef * c.hidden, init) : std::vector<float>{},
                           dy = random(c.tokens * c.hidden, 1.f);
  // Jitter: the noise of the first forward of a layer seeded with `seed` (Layer::set_seed), as the GPU draws it.
  const std::vector<float> noise =
      f.jitter_eps > 0 ? reference::jitter_noise(c.tokens * c.hidden, float(f.jitter_eps), jitter_key(seed, 0))
                       : std::vector<float>{};
  reference::LayerParams p{x, router, w1, w2, v1};
  p.noise = noise;

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const reference::LayerForward fwd = reference::layer_forward(c, p);
  const auto t1 = clock::now();
  const reference::LayerGrads grads = reference::layer_backward(c, p, fwd, dy);
  const auto t2 = clock::now();
  const std::vector<reference::DirectionalCheck> checks = reference::directional_check(c, p, grads, dy, seed + 1);
  const double fwd_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double bwd_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();

  // Host bytes held at the peak (after backward): parameters, dy, what forward keeps, the gradients.
  auto bytes = [](const auto& v) { return int64_t(v.size() * sizeof(v[0])); };
  const int64_t peak = bytes(x) + bytes(router) + bytes(w1) + bytes(w2) + bytes(v1) + bytes(dy) + bytes(fwd.y) +
                       bytes(fwd.logits) + bytes(fwd.h) + bytes(fwd.g) + bytes(fwd.o) + bytes(grads.dx) +
                       bytes(grads.drouter) + bytes(grads.dw1) + bytes(grads.dw2) + bytes(grads.dv1) + bytes(noise);
  double max_err = 0;
  for (const auto& ch : checks) max_err = std::max(max_err, ch.rel_err);
  constexpr double kTolerance = 1e-3;
  const bool verified = max_err < kTolerance;

  int64_t min_count = c.tokens * c.top_k, max_count = 0;
  for (int64_t n : fwd.routing.counts) min_count = std::min(min_count, n), max_count = std::max(max_count, n);
  fmt::print("dmoe run --device cpu: T={} H={} F={} E={} K={} {}{}{} (fp64 reference layer), seed {}\n", c.tokens,
             c.hidden, c.ffn, c.experts, c.top_k, to_string(c.activation), c.gated ? " gated" : "",
             f.jitter_eps > 0 ? fmt::format(" jitter {}", f.jitter_eps) : "", seed);
  fmt::print("  forward   {:10.2f} ms   {:7.2f} GFLOP/s\n", fwd_ms, fwd_flops / (fwd_ms * 1e6));
  fmt::print("  backward  {:10.2f} ms   {:7.2f} GFLOP/s\n", bwd_ms, 2 * fwd_flops / (bwd_ms * 1e6));
  fmt::print("  tokens per expert {}…{}, load-balancing loss {:.6f}, z-loss {:.6f}, host peak {:.1f} MiB\n",
             min_count, max_count, fwd.routing.lbl, fwd.routing.z, peak / 1048576.0);
  for (const auto& ch : checks)
    fmt::print("  d{:<7} along a random direction: analytic {:+.6e}  central difference {:+.6e}  rel err {:.1e}\n",
               ch.tensor, ch.analytic, ch.numeric, ch.rel_err);
  fmt::print("  {} (max rel err {:.1e}, tolerance {:.0e})\n", verified ? "verified" : "NOT VERIFIED", max_err, kTolerance);
  if (f.json)
    fmt::print("{{\"device\": \"cpu\", \"tokens\": {}, \"hidden\": {}, \"ffn\": {}, \"experts\": {}, \"top_k\": {}, "
               "\"activation\": \"{}\", \"gated\": {}, \"fwd_ms\": {:.6g}, \"bwd_ms\": {:.6g}, \"peak_bytes\": {}, "
               "\"max_rel_err\": {:.6g}, \"verified\": {}, \"seed\": {}}}\n",
               c.tokens, c.hidden, c.ffn, c.experts, c.top_k, to_string(c.activation), c.gated, fwd_ms, bwd_ms, peak,
               max_err, verified, seed);
  return verified ? 0 : 1;
}

}  // namespace

Command add_run_command(CLI::App& root) {
  CLI::App* app = root.add_subcommand("run", "Run one dMoE layer step (forward + backward) on random data, checked");
  auto f = std::make_shared<RunFlags>();
  app->add_option("--preset", f->preset, "Model shape (see `dmoe presets`)")->capture_default_str();
  app->add_option("--tokens", f->tokens, "Tokens T (default: the preset's)");
  app->add_option("--hidden", f->hidden, "Model width H");
  app->add_option("--ffn", f->ffn, "Expert FFN width F");
  app->add_option("--experts", f->experts, "Experts E");
  app->add_option("--top-k", f->top_k, "Experts per token K");
  f->activation_opt = app->add_option("--activation", f->activation, "gelu|silu|relu (default: the preset's)");
  f->glu_opt = app->add_flag("--glu,!--no-glu", f->glu, "Gated experts (GLU/SwiGLU, a third weight v1)");
  app->add_option("--device", f->device,
                  "auto (the GPU when one is usable, else the CPU) | gpu | cpu (the fp64 reference layer)")
      ->capture_default_str();
  app->add_option("--block", f->block, "Block size B: 64, 128 or 256 (default 128)");
  app->add_option("--renorm", f->renorm_p, "Renormalize the top-k weights by their p-norm: 0 (off), 1, 2")
      ->capture_default_str();
  app->add_option("--lbl-weight", f->lbl_weight, "Load-balancing loss weight")->capture_default_str();
  app->add_option("--z-weight", f->z_weight, "Router z-loss weight")->capture_default_str();
  app->add_flag("--recompute", f->recompute,
                "GPU: memory-saving mode, backward recomputes the hidden activation and the expert outputs "
                "(the CPU reference keeps everything)");
  app->add_option("--jitter", f->jitter_eps,
                 "Router jitter eps: the router's input x * U(1 - eps, 1 + eps), fresh each forward; 0: off")
      ->capture_default_str();
  app->add_option("--reps", f->reps, "GPU: timed steps (medians reported)")->capture_default_str();
  app->add_option("--seed", f->seed, "Random seed (default: fresh each run)");
  app->add_flag("--json", f->json, "Also print one JSON object with fwd_ms, bwd_ms, peak_bytes, max_rel_err, verified");
  return {app, [f] { return run_layer(*f); }};
}

}  // namespace dmoe::cli

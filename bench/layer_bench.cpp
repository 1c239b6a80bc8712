// The GPU layer end to end. Parameters and inputs are uniform in [−1, 1) (bench_util's fill_random);
// every parameter tensor of these shapes is larger than L2 (the smallest, mb-46m's w1, is 128 MiB), so a
// step cannot run from cache and no input rotation is needed. Times are medians of `reps` steps after
// two warm-up steps, each phase bracketed by CUDA events, each timed step enqueued while the GPU runs the
// one before (time_steps). The check recomputes sampled tokens and weight
// rows in fp64 (reference::check_layer_sample) after poisoning every output.
#include "layer_bench.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <tuple>
#include <vector>

#include "bench_util.hpp"
#include "dmoe/layer_reference.hpp"
#include "dmoe/routing_args.cuh"
#include "dmoe/tuning.hpp"
#include "dmoe_commit.hpp"
#include "product_bench.hpp"

namespace dmoe::bench {
namespace {

constexpr double kTolerance = 1e-2;  // bf16 operands, fp32 accumulation (dmoe-semantics.md)

// Host floats for a [rows, H] bf16 device tensor, filled only for the requested row ranges: the array is
// allocated uninitialized, so rows never downloaded take no memory (the weights of large presets are tens
// of GiB as floats).
// Elements [first, first + count) of a bf16 device tensor, converted into out[0, count).
template <class T>
void download_bf16(const Device& dev, const void* src, int64_t first, int64_t count, T* out) {
  std::vector<uint16_t> bits(count);
  dev.copy_to_host(bits.data(), static_cast<const uint16_t*>(src) + first, count * 2);
  for (int64_t i = 0; i < count; ++i) out[i] = T(reference::from_bf16(bits[i]));
}

struct HostRows {
  std::unique_ptr<float[]> data;
  int64_t size = 0;
  HostRows(int64_t n) : data(new float[std::max<int64_t>(n, 1)]), size(n) {}
  void fetch(const Device& dev, const void* src, int64_t first, int64_t count) {
    download_bf16(dev, src, first, count, data.get() + first);
  }
  std::span<const float> span() const { return {data.get(), size_t(size)}; }
};

// Rows `rows` of a [*, H] bf16 device tensor, back to back.
std::vector<double> fetch_rows(const Device& dev, const void* src, const std::vector<int64_t>& rows, int64_t H) {
  std::vector<double> out(rows.size() * H);
  for (size_t i = 0; i < rows.size(); ++i) download_bf16(dev, src, rows[i] * H, H, out.data() + i * H);
  return out;
}

// Tokens the sampled check recomputes: 16 at every K. With 32 / K of them (4 at K = 8) the relative
// error over so few rows had a heavy tail (dx 8.3e-3 to 1.1e-2 at DeepSeek-V3, Mixtral and fine-grained
// across runs, against 3-5e-3 over 16 tokens at K = 1), so the 1e-2 verdict failed now and then.
int64_t sampled_tokens(const MoeShape& s) { return std::min<int64_t>(16, s.tokens); }
constexpr int kSampledRows = 16;

struct Buffers {
  DeviceBuffer x, y, dy, dx, router, drouter, w1, w2, v1, dw1, dw2, dv1;
  size_t bytes = 0;
  Buffers(const Device& dev, const MoeShape& s, uint64_t seed) {
    const int64_t TH = s.tokens * s.hidden * 2, EH = s.experts * s.hidden * 2, W = s.experts * s.ffn * s.hidden * 2;
    auto make = [&](int64_t n, bool random, uint64_t salt) {
      DeviceBuffer b(dev, n);
      bytes += n;
      if (random) fill_random(dev, b.get(), n, seed * 31 + salt);
      return b;
    };
    x = make(TH, true, 1), y = make(TH, false, 0), dy = make(TH, true, 2), dx = make(TH, false, 0);
    router = make(EH, true, 3), drouter = make(EH, false, 0);
    w1 = make(W, true, 4), w2 = make(W, true, 5), dw1 = make(W, false, 0), dw2 = make(W, false, 0);
    if (s.gated) v1 = make(W, true, 6), dv1 = make(W, false, 0);
  }
  LayerWeights weights(bool gated) const { return {router.get(), w1.get(), w2.get(), gated ? v1.get() : nullptr}; }
  LayerGradients grads(bool gated) const {
    return {dx.get(), drouter.get(), dw1.get(), dw2.get(), gated ? dv1.get() : nullptr};
  }
};

// The sampled check of the step that just ran (outputs poisoned before it).
reference::SampleResult check_step(const Device& dev, const MoeShape& s, const LayerOptions& lo, const Buffers& b,
                                   const LayerContext& ctx, uint64_t seed) {
  const int64_t T = s.tokens, H = s.hidden, F = s.ffn, E = s.experts, K = s.top_k;
  std::vector<int32_t> ids(T * K), counts(E);
  std::vector<float> weights(T * K);
  dev.copy_to_host(ids.data(), ctx.expert_ids(), ids.size() * 4);
  dev.copy_to_host(weights.data(), ctx.weights(), weights.size() * 4);
  dev.copy_to_host(counts.data(), ctx.counts(), counts.size() * 4);

  std::mt19937_64 rng(seed);
  reference::LayerSample sample;
  std::set<int64_t> tokens;
  while (int64_t(tokens.size()) < sampled_tokens(s)) tokens.insert(int64_t(rng() % uint64_t(T)));
  sample.tokens.assign(tokens.begin(), tokens.end());
  std::set<int64_t> experts;  // only these experts' weights are downloaded
  for (int64_t t : sample.tokens)
    for (int64_t k = 0; k < K; ++k) experts.insert(ids[t * K + k]);
  const std::vector<int64_t> ex(experts.begin(), experts.end());
  for (int i = 0; i < kSampledRows; ++i) sample.rows.push_back(ex[rng() % ex.size()] * F + int64_t(rng() % uint64_t(F)));

  HostRows x(T * H), dy(T * H), router(E * H), w1(E * F * H), w2(E * F * H), v1(s.gated ? E * F * H : 0);
  x.fetch(dev, b.x.get(), 0, T * H);
  dy.fetch(dev, b.dy.get(), 0, T * H);
  router.fetch(dev, b.router.get(), 0, E * H);
  for (int64_t e : ex) {
    w1.fetch(dev, b.w1.get(), e * F * H, F * H);
    w2.fetch(dev, b.w2.get(), e * F * H, F * H);
    if (s.gated) v1.fetch(dev, b.v1.get(), e * F * H, F * H);
  }
  sample.y = fetch_rows(dev, b.y.get(), sample.tokens, H);
  sample.dx = fetch_rows(dev, b.dx.get(), sample.tokens, H);
  sample.dw1 = fetch_rows(dev, b.dw1.get(), sample.rows, H);
  sample.dw2 = fetch_rows(dev, b.dw2.get(), sample.rows, H);
  if (s.gated) sample.dv1 = fetch_rows(dev, b.dv1.get(), sample.rows, H);

  reference::LayerConfig c;
  c.tokens = T, c.hidden = H, c.ffn = F, c.experts = E, c.top_k = K, c.activation = s.activation, c.gated = s.gated;
  c.renorm_p = lo.renorm_p, c.lbl_weight = lo.lbl_weight, c.z_weight = lo.z_weight;
  reference::LayerParams p{x.span(), router.span(), w1.span(), w2.span(), v1.span()};
  // Jitter: the step's noise, from the {seed, offset} its forward recorded, and the router's input as the
  // device rounded it (one fp32 product, rounded to bf16).
  std::vector<float> noise, router_x;
  if (lo.jitter_eps > 0) {
    uint64_t seed_offset[2];
    dev.copy_to_host(seed_offset, ctx.jitter_seed(), sizeof seed_offset);
    noise = reference::jitter_noise(T * H, lo.jitter_eps, jitter_key(seed_offset[0], seed_offset[1]));
    router_x.resize(noise.size());
    const float* xv = x.span().data();
    for (size_t i = 0; i < noise.size(); ++i) router_x[i] = reference::from_bf16(reference::to_bf16(xv[i] * noise[i]));
    p.noise = noise, p.router_x = router_x;
  }
  return reference::check_layer_sample(c, p, dy.span(), ids, weights, counts, sample);
}

// Medians of `reps` timed forward and backward passes (events around each), after two warm-up steps.
// Each timed step follows an untimed one with no host synchronization between them, so the host enqueues
// the timed passes while the GPU still runs the step before (as in training, where the layer never makes
// the host wait): the events measure the GPU's time. Until session 14 every pass started on an idle GPU,
// which adds the host's launch latency to the first kernels' phases (mb-46m's router GEMM: 44 µs in the
// layer, 28 µs alone); those figures and the host's enqueue time per pass are reported beside.
struct StepTimes {
  double fwd_ms = 0, bwd_ms = 0;            // the GPU's time, the host ahead
  double fwd_idle_ms = 0, bwd_idle_ms = 0;  // each pass started right after a host synchronization
  double host_fwd_ms = 0, host_bwd_ms = 0;  // the host's time to enqueue a pass (the GPU busy)
};
StepTimes time_steps(const Device& dev, Layer& layer, LayerContext& ctx, const Buffers& b, Stream stream, int reps) {
  using clock = std::chrono::steady_clock;
  const bool g = layer.shape().gated;
  auto forward = [&] { layer.forward(b.x.get(), b.weights(g), b.y.get(), ctx, stream); };
  auto backward = [&] { layer.backward(b.dy.get(), b.weights(g), ctx, b.grads(g), stream); };
  auto ms_since = [](clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); };
  EventTimer fwd(dev), bwd(dev);
  std::vector<double> f, bk, fi, bi, hf, hb;
  for (int i = 0; i < std::max(1, reps) + 2; ++i) {
    forward();  // the head start: the GPU runs this step while the host enqueues the timed one
    backward();
    auto t = clock::now();
    fwd.start(stream);
    forward();
    fwd.stop(stream);
    const double host_f = ms_since(t);
    t = clock::now();
    bwd.start(stream);
    backward();
    bwd.stop(stream);
    const double host_b = ms_since(t);
    const double fm = fwd.elapsed_ms(), bm = bwd.elapsed_ms();  // synchronizes: the GPU is idle after
    fwd.start(stream);
    forward();
    fwd.stop(stream);
    bwd.start(stream);
    backward();
    bwd.stop(stream);
    const double fim = fwd.elapsed_ms(), bim = bwd.elapsed_ms();
    if (i < 2) continue;
    f.push_back(fm), bk.push_back(bm), fi.push_back(fim), bi.push_back(bim), hf.push_back(host_f), hb.push_back(host_b);
  }
  return {median(f), median(bk), median(fi), median(bi), median(hf), median(hb)};
}

// Padded rows over the routed rows, minus 1: each expert's count rounded up to the block.
double padding_of(std::span<const int32_t> counts, int64_t block, int64_t routed_rows) {
  int64_t padded = 0;
  for (int32_t c : counts) padded += (int64_t{c} + block - 1) / block * block;
  return double(padded - routed_rows) / double(routed_rows);
}

// Minimum bytes of a forward (read x and the expert weights, write y) and of a backward (read dy, x and
// the weights, write dx and the weight gradients).
double forward_bytes(const MoeShape& s) {
  const double w = (s.gated ? 3.0 : 2.0) * s.experts * s.ffn * s.hidden * 2, th = double(s.tokens) * s.hidden * 2;
  return w + 2 * th;
}
double backward_bytes(const MoeShape& s) {
  const double w = (s.gated ? 3.0 : 2.0) * s.experts * s.ffn * s.hidden * 2, th = double(s.tokens) * s.hidden * 2;
  return 2 * w + 3 * th;
}

// The layer's distinct product kernels, and those whose tile is not their default (a tuning database
// record: tuned_spec), each as its product_label and tile.
std::pair<int, std::vector<std::string>> tuned_products(const Layer& layer, const MoeShape& s) {
  std::set<std::string> seen;
  std::vector<std::string> tuned;
  for (const KernelSpec& k : layer.kernels()) {
    if (!is_product(k.op) || !seen.insert(kernel_name(k)).second) continue;
    KernelSpec d = default_spec(s, k.op, k.trans_a, k.trans_b, k.arch, k.epilogue, k.gated);
    if (d.tile == k.tile) continue;
    tuned.push_back(fmt::format("{} {}", product_label(k), TuningDb::tile_string(k.tile)));
  }
  return {int(seen.size()), tuned};
}

}  // namespace

LayerRunResult run_layer_gpu(const LayerRunOptions& o) {
  const MoeShape& s = o.shape;
  Device dev(0);
  OwnedStream stream(dev);
  const uint64_t seed = o.seed ? o.seed : std::random_device{}();
  using clock = std::chrono::steady_clock;
  LayerRunResult r;

  const auto t0 = clock::now();
  Layer layer(dev, s, o.layer);
  if (o.layer.jitter_eps > 0) layer.set_seed(seed);
  LayerContext ctx(layer);
  r.warmup_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  std::tie(r.products, r.tuned) = tuned_products(layer, s);
  Buffers b(dev, s, seed);
  const bool g = s.gated;

  auto step = [&] {
    layer.forward(b.x.get(), b.weights(g), b.y.get(), ctx, stream.get());
    layer.backward(b.dy.get(), b.weights(g), ctx, b.grads(g), stream.get());
  };
  const StepTimes times = time_steps(dev, layer, ctx, b, stream.get(), o.reps);
  r.fwd_ms = times.fwd_ms;
  r.bwd_ms = times.bwd_ms;
  r.fwd_idle_ms = times.fwd_idle_ms;
  r.bwd_idle_ms = times.bwd_idle_ms;
  r.host_fwd_ms = times.host_fwd_ms;
  r.host_bwd_ms = times.host_bwd_ms;

  // Phase times of profiled steps (events between phases), for the routing's share of the step: each
  // phase's median over the steps (one step's phases moved by 10-20 % run to run: power cap, launch jitter).
  layer.set_profiling(true);
  constexpr int kProfiledSteps = 15;
  constexpr double LayerProfile::* kPhases[] = {&LayerProfile::router_gemm, &LayerProfile::routing,
                                                &LayerProfile::experts_fwd, &LayerProfile::combine,
                                                &LayerProfile::routing_bwd, &LayerProfile::experts_bwd,
                                                &LayerProfile::gather_bwd,  &LayerProfile::router_gemm_bwd,
                                                &LayerProfile::recompute};
  std::vector<std::vector<double>> samples(std::size(kPhases));
  std::vector<double> share;
  for (int i = 0; i < kProfiledSteps; ++i) {
    step();  // the head start (see time_steps): its phase events are recorded again by the next step
    step();
    const LayerProfile p = layer.profile();
    for (size_t j = 0; j < std::size(kPhases); ++j) samples[j].push_back(p.*kPhases[j]);
    const double routing = p.routing + p.combine + p.routing_bwd + p.gather_bwd;
    const double total =
        routing + p.router_gemm + p.experts_fwd + p.experts_bwd + p.router_gemm_bwd + p.recompute;
    share.push_back(routing / total);
  }
  layer.set_profiling(false);
  LayerProfile prof{};
  for (size_t j = 0; j < std::size(kPhases); ++j) prof.*kPhases[j] = median(samples[j]);
  r.routing_share = median(share);

  {  // The routing's padding (read back after the timed steps, as dmoe tune --layer does).
    dev.synchronize(stream.get());
    std::vector<int32_t> counts(size_t(s.experts));
    dev.copy_to_host(counts.data(), ctx.counts(), s.experts * 4);
    r.padding = padding_of(counts, s.block, s.tokens * s.top_k);
  }
  r.dmoe_bytes = layer.bytes() + ctx.bytes();
  r.peak_bytes = r.dmoe_bytes + b.bytes;
  const double ffl = layer.forward_flops(), bfl = layer.backward_flops();
  if (o.gemm_flops_per_sec > 0 && o.copy_bytes_per_sec > 0) {
    const double fsol = std::max(ffl / o.gemm_flops_per_sec, forward_bytes(s) / o.copy_bytes_per_sec) * 1e3;
    const double bsol = std::max(bfl / o.gemm_flops_per_sec, backward_bytes(s) / o.copy_bytes_per_sec) * 1e3;
    r.fwd_sol = fsol / r.fwd_ms;
    r.step_sol = (fsol + bsol) / (r.fwd_ms + r.bwd_ms);
  }

  reference::SampleResult sr;
  if (o.check) {
    for (DeviceBuffer* p : {&b.y, &b.dx, &b.drouter, &b.dw1, &b.dw2, &b.dv1})
      if (p->get()) dev.fill_u8(p->get(), 0xff, p->size(), stream.get());  // NaN: unwritten elements fail
    step();
    dev.synchronize(stream.get());
    sr = check_step(dev, s, o.layer, b, ctx, seed + 7);
    r.checked = true;
    r.max_rel_err = std::max({sr.y, sr.dx, sr.dw1, sr.dw2, sr.dv1});
    r.verified = r.max_rel_err < kTolerance && sr.not_top_k == 0 && sr.weights < 1e-3;
    if (!std::isfinite(r.max_rel_err)) r.verified = false;
  }

  const DeviceProperties& props = dev.properties();
  fmt::print("dmoe run --device gpu: {} T={} H={} F={} E={} K={} {}{} B={}{} on {} (dmoe {})\n", o.label,
             s.tokens, s.hidden, s.ffn, s.experts, s.top_k, to_string(s.activation), s.gated ? " gated" : "", s.block,
             std::string(o.layer.recompute ? " recompute" : "") +
                 (o.layer.jitter_eps > 0 ? fmt::format(" jitter {}", o.layer.jitter_eps) : ""),
             props.name, DMOE_COMMIT);
  fmt::print("  warm-up (layer construction, kernels compiled or loaded) {:.0f} ms\n", r.warmup_ms);
  fmt::print("  tiles: {} of {} products from the tuning database ({}){}{}\n", r.tuned.size(), r.products,
             TuningDb::default_path().string(), r.tuned.empty() ? "" : ": ", fmt::join(r.tuned, ", "));
  fmt::print("  forward   {:9.3f} ms  {:7.1f} TFLOP/s{}\n", r.fwd_ms, ffl / (r.fwd_ms * 1e9),
             r.fwd_sol > 0 ? fmt::format("  SOL {:.2f}", r.fwd_sol) : "");
  fmt::print("  backward  {:9.3f} ms  {:7.1f} TFLOP/s\n", r.bwd_ms, bfl / (r.bwd_ms * 1e9));
  fmt::print("  step      {:9.3f} ms  {:7.1f} TFLOP/s{}\n", r.fwd_ms + r.bwd_ms,
             (ffl + bfl) / ((r.fwd_ms + r.bwd_ms) * 1e9),
             r.step_sol > 0 ? fmt::format("  SOL {:.2f}", r.step_sol) : "");
  fmt::print("  from an idle GPU (a host synchronization before each pass): forward {:.3f} ms, backward {:.3f} ms; "
             "the host enqueues a forward in {:.3f} ms, a backward in {:.3f} ms{}\n",
             r.fwd_idle_ms, r.bwd_idle_ms, r.host_fwd_ms, r.host_bwd_ms,
             r.host_fwd_ms + r.host_bwd_ms > r.fwd_ms + r.bwd_ms ? " (host-bound: the GPU waits for launches)" : "");
  fmt::print("  phases (ms): router GEMM {:.3f}, routing {:.3f}, experts {:.3f}, combine {:.3f} | {}routing grad "
             "{:.3f}, experts {:.3f}, gather grad {:.3f}, router GEMMs {:.3f}; routing share {:.1f}%\n",
             prof.router_gemm, prof.routing, prof.experts_fwd, prof.combine,
             o.layer.recompute ? fmt::format("recompute {:.3f}, ", prof.recompute) : "", prof.routing_bwd,
             prof.experts_bwd, prof.gather_bwd, prof.router_gemm_bwd, 100 * r.routing_share);
  fmt::print("  routing: {:.1f} % of the rows are padding (each expert's rows rounded up to B = {}): the products "
             "compute them, the SOL does not count them\n", 100 * r.padding, s.block);
  fmt::print("  device memory: dmoe {:.1f} MiB, with the caller's tensors {:.1f} MiB\n", r.dmoe_bytes / 1048576.0,
             r.peak_bytes / 1048576.0);
  if (r.checked)
    fmt::print("  check ({} tokens, {} weight rows, fp64): y {:.1e}  dx {:.1e}  dw1 {:.1e}  dw2 {:.1e}{}  weights "
               "{:.1e}  non-top-k {} -> {}\n",
               sampled_tokens(s), kSampledRows, sr.y, sr.dx, sr.dw1, sr.dw2,
               s.gated ? fmt::format("  dv1 {:.1e}", sr.dv1) : "", sr.weights, sr.not_top_k,
               r.verified ? "verified" : "NOT VERIFIED");
  if (o.json)
    fmt::print("{{\"device\": \"gpu\", \"gpu\": \"{}\", \"commit\": \"{}\", \"label\": \"{}\", \"tokens\": {}, "
               "\"hidden\": {}, \"ffn\": {}, \"experts\": {}, \"top_k\": {}, \"activation\": \"{}\", \"gated\": {}, "
               "\"block\": {}, \"recompute\": {}, \"jitter_eps\": {}, \"warmup_ms\": {:.6g}, \"fwd_ms\": {:.6g}, \"bwd_ms\": {:.6g}, "
               "\"fwd_idle_ms\": {:.6g}, \"bwd_idle_ms\": {:.6g}, \"host_fwd_ms\": {:.6g}, \"host_bwd_ms\": {:.6g}, \"fwd_tflops\": {:.6g}, "
               "\"step_tflops\": {:.6g}, \"fwd_sol\": {:.4g}, \"step_sol\": {:.4g}, \"routing_share\": {:.4g}, \"padding\": {:.4g}, "
               "\"dmoe_bytes\": {}, \"peak_bytes\": {}, \"checked\": {}, \"max_rel_err\": {:.6g}, \"verified\": {}, "
               "\"products\": {}, \"tuned_products\": {}, \"seed\": {}}}\n",
               props.name, DMOE_COMMIT, o.label, s.tokens, s.hidden, s.ffn, s.experts, s.top_k,
               to_string(s.activation), s.gated, s.block, o.layer.recompute, o.layer.jitter_eps, r.warmup_ms, r.fwd_ms, r.bwd_ms,
               r.fwd_idle_ms, r.bwd_idle_ms, r.host_fwd_ms, r.host_bwd_ms, ffl / (r.fwd_ms * 1e9),
               (ffl + bfl) / ((r.fwd_ms + r.bwd_ms) * 1e9), r.fwd_sol, r.step_sol, r.routing_share, r.padding, r.dmoe_bytes,
               r.peak_bytes, r.checked, r.max_rel_err, r.verified, r.products, r.tuned.size(), seed);
  return r;
}

int layer(const LayerBenchOptions& opt) {
  std::vector<std::string> names = opt.presets;
  if (names.empty())
    for (const Preset& p : presets())
      if (p.name != "tiny") names.emplace_back(p.name);
  for (const std::string& name : names) {  // bad presets, tokens or options: said before any GPU work
    MoeShape s = preset(name);
    if (opt.tokens) s.tokens = opt.tokens;
    validate(s, opt.layer);
  }
  Device dev(0);
  const Ceilings c = measure_ceilings();  // the product benchmark's definition, printed there
  const double gemm = c.gemm_flops_per_sec, copy = c.copy_bytes_per_sec;
  if (opt.json)
    fmt::print("{{\"ceilings\": true, \"gpu\": \"{}\", \"commit\": \"{}\", \"gemm_tflops\": {:.6g}, "
               "\"gemm_measured\": {}, \"copy_tbs\": {:.6g}}}\n",
               dev.properties().name, DMOE_COMMIT, gemm / 1e12, c.gemm_measured, copy / 1e12);
  struct Row {
    std::string name;
    MoeShape s;
    LayerRunResult r;
    std::string error;
  };
  std::vector<Row> rows;
  for (const std::string& name : names) {
    LayerRunOptions o;
    o.label = name;
    o.shape = preset(name);
    if (opt.tokens) o.shape.tokens = opt.tokens;
    o.layer = opt.layer;
    o.check = opt.check;
    o.json = opt.json;
    o.reps = opt.reps;
    o.gemm_flops_per_sec = gemm;
    o.copy_bytes_per_sec = copy;
    Row row{name, o.shape, {}, {}};
    try {
      row.r = run_layer_gpu(o);
    } catch (const std::exception& e) {
      row.error = e.what();
      fmt::print("{}: failed: {}\n", name, e.what());
    }
    rows.push_back(row);
  }
  fmt::print("\n{:<14} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}\n", "preset", "T", "fwd ms", "bwd ms",
             "step ms", "TFLOP/s", "fwd SOL", "step SOL", "routing", "peak GiB");
  int rc = 0;
  for (const Row& row : rows) {
    if (!row.error.empty()) {
      fmt::print("{:<14} failed: {}\n", row.name, row.error);
      rc = 1;
      continue;
    }
    const LayerRunResult& r = row.r;
    const double step = r.fwd_ms + r.bwd_ms;
    const double flops = 3.0 * (row.s.gated ? 3 : 2) * 2.0 * row.s.tokens * row.s.top_k * row.s.hidden * row.s.ffn;
    fmt::print("{:<14} {:>6} {:>9.3f} {:>9.3f} {:>9.3f} {:>8.1f} {:>8.2f} {:>8.2f} {:>8.1f}% {:>9.2f}{}\n", row.name,
               row.s.tokens, r.fwd_ms, r.bwd_ms, step, flops / (step * 1e9), r.fwd_sol, r.step_sol,
               100 * r.routing_share, r.peak_bytes / double(1 << 30),
               r.checked ? (r.verified ? "  verified" : "  NOT VERIFIED") : "");
    if (r.checked && !r.verified) rc = 1;
  }
  return rc;
}

int tune_layer_blocks(const LayerTuneOptions& opt) {
  Device dev(0);
  OwnedStream stream(dev);
  MoeShape s = opt.shape;
  validate(s);
  const int64_t T = s.tokens, H = s.hidden, E = s.experts, K = s.top_k;
  // The routing: x's column 0 is 1, the router's column 0 the per-expert bias, its other columns small
  // enough (uniform ±3/√H: logit noise of standard deviation ~1) for the bias to shape the counts.
  const uint64_t seed = std::random_device{}();
  // A histogram of counts: bias ln(max(count, 0.5)/mean), so the router's softmax leans toward it.
  if (!opt.counts.empty() && int64_t(opt.counts.size()) != E)
    throw InvalidArgument(fmt::format("LayerTuneOptions::counts has {} entries for {} experts", opt.counts.size(), E));
  std::vector<float> bias(E, 0.f);
  for (int64_t e = 0; e < E; ++e)
    if (!opt.counts.empty())
      bias[e] = float(std::log(std::max(double(opt.counts[e]), 0.5) * double(E) / double(T * K)));
    else if (opt.zipf)
      bias[e] = -1.2f * std::log(float(e + 1));
  std::vector<uint16_t> xh(T * H), rh(E * H);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t i = 0; i < T * H; ++i) xh[i] = reference::to_bf16(i % H == 0 ? 1.f : u(rng));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t j = 0; j < H; ++j)
      rh[e * H + j] = reference::to_bf16(j == 0 ? bias[e] : 3.f * u(rng) / std::sqrt(float(H)));
  fmt::print("dmoe tune --layer on {}: T={} H={} F={} E={} K={} {}{}, {} routing, {} timed steps per block size\n",
             dev.properties().name, T, H, s.ffn, E, K, to_string(s.activation), s.gated ? " gated" : "",
             !opt.counts.empty() ? "--counts (router biased toward the histogram; approximate: the router's own "
                                   "top-k decides)"
             : opt.zipf          ? "Zipf"
                                 : "uniform",
             opt.reps);
  struct Row {
    int64_t block;
    double waste = NAN, fwd = NAN, bwd = NAN;
    std::string error;
  };
  std::vector<Row> rows;
  std::vector<int64_t> achieved;  // --counts: the router's counts (the same x and router for every block)
  for (int64_t block : opt.blocks) {
    Row row{block};
    try {
      s.block = block;
      validate(s);
      Layer layer(dev, s, {});
      LayerContext ctx(layer);
      Buffers b(dev, s, seed);
      dev.copy_to_device(b.x.get(), xh.data(), xh.size() * 2);
      dev.copy_to_device(b.router.get(), rh.data(), rh.size() * 2);
      const StepTimes times = time_steps(dev, layer, ctx, b, stream.get(), opt.reps);
      row.fwd = times.fwd_ms, row.bwd = times.bwd_ms;
      std::vector<int32_t> counts(E);
      dev.copy_to_host(counts.data(), ctx.counts(), E * 4);
      if (!opt.counts.empty() && achieved.empty()) achieved.assign(counts.begin(), counts.end());
      row.waste = padding_of(counts, block, T * K);
    } catch (const InvalidArgument& e) {
      row.error = e.what();
    }
    rows.push_back(row);
  }
  const Row* base = nullptr;
  const Row* best = nullptr;
  for (const Row& r : rows) {
    if (!r.error.empty()) continue;
    if (r.block == 128) base = &r;
    if (!best || r.fwd + r.bwd < best->fwd + best->bwd) best = &r;
  }
  if (!achieved.empty()) {
    const auto [lo, hi] = std::minmax_element(opt.counts.begin(), opt.counts.end());
    const auto [alo, ahi] = std::minmax_element(achieved.begin(), achieved.end());
    int64_t off = 0;  // assignments the router placed differently from the histogram
    for (int64_t e = 0; e < E; ++e) off += std::abs(achieved[e] - opt.counts[e]);
    fmt::print("routing: tokens per expert {}..{} asked, {}..{} routed; {:.1f}% of assignments off the histogram\n",
               *lo, *hi, *alo, *ahi, 50.0 * double(off) / double(T * K));
  }
  fmt::print("{:>6} {:>9} {:>10} {:>10} {:>10} {:>9}\n", "block", "padding", "fwd ms", "bwd ms", "step ms",
             "vs B=128");
  for (const Row& r : rows) {
    if (!r.error.empty()) {
      fmt::print("{:>6}   not a layer of this shape: {}\n", r.block, r.error);
      continue;
    }
    const double step = r.fwd + r.bwd;
    fmt::print("{:>6} {:>8.1f}% {:>10.3f} {:>10.3f} {:>10.3f} {:>9}{}\n", r.block, 100 * r.waste, r.fwd, r.bwd, step,
               base ? fmt::format("{:.2f}x", (base->fwd + base->bwd) / step) : "-", &r == best ? "  best" : "");
  }
  if (best) fmt::print("best block size: {} (dmoe run --block {})\n", best->block, best->block);
  return best ? 0 : 1;
}

}  // namespace dmoe::bench

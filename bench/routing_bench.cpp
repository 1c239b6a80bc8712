// Routing benchmark: T ∈ {16K, 64K, 256K} × E ∈ {8, 64, 256} × K ∈ {1, 2, 8}, hidden 2048; with the
// gated experts' elementwise kernels (Glu, GluGrad; the default GELU activation) on the sparse data.
// Per kernel: median over batches of back-to-back launches rotating input sets larger than L2 (CUDA
// events, after warm-up), the
// minimum bytes it must move, achieved bandwidth and its fraction of the measured copy bandwidth.
// The chain (router → gather, and the scatter) is also timed as one CUDA graph and compared with the
// speed-of-light time of the same layer's forward expert products (2 · 2·T·K·H·F FLOPs at the
// measured GEMM ceiling): a lower bound on the matmul time, so the ratio is an upper bound.
#include "routing_bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dmoe/routing.hpp"

namespace dmoe::bench {
namespace {

constexpr double kCopyBytesPerSec = 4.27e12;  // ../shared/bench/h200-baselines.md, read + write
constexpr double kGemmFlopsPerSec = 794e12;   // cuBLAS bf16 8192³ on the same H200
constexpr int64_t kHidden = 2048, kFfn = 2048;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Problem {
  int64_t tokens;
  int experts, top_k;
  int64_t hidden = kHidden, ffn = kFfn;
  std::string name;  // a preset's name, else the grid's label
  std::string label() const {
    return name.empty() ? fmt::format("T={}K E={} K={}", tokens / 1024, experts, top_k) : name;
  }
};

struct KernelRow {
  std::string name;
  double ms = 0, bytes = 0;
};

}  // namespace

int routing(const RoutingBenchOptions& opt) {
  Device dev(0);
  KernelCache cache(dev);
  OwnedStream stream(dev);
  std::vector<Problem> problems;
  for (int64_t t : {16384, 65536, 262144})
    for (int e : {8, 64, 256})
      for (int k : {1, 2, 8}) {
        if (opt.quick && t != 16384) continue;
        Problem p{t, e, k};
        if (opt.filter.empty() || p.label().find(opt.filter) != std::string::npos) problems.push_back(p);
      }
  // The presets' own layer shapes and token counts: the chain against real layers' matmuls.
  for (const char* name : {"mb-46m", "mb-356m", "mixtral-8x7b", "fine-grained", "deepseek-v3"}) {
    const MoeShape& s = preset(name);
    Problem p{s.tokens, int(s.experts), int(s.top_k), s.hidden, s.ffn, name};
    if (!opt.quick && (opt.filter.empty() || p.label().find(opt.filter) != std::string::npos)) problems.push_back(p);
  }

  fmt::print("routing benchmark on {} ({} SMs), bf16; grid problems use hidden {}, ffn {} (the ffn only enters the\n"
             "matmul comparison); preset problems use their own shape and token count\n",
             dev.properties().name, dev.properties().sm_count, kHidden, kFfn);
  fmt::print("{:<20} {:<12} {:>9} {:>10} {:>9} {:>7}\n", "problem", "kernel", "time us", "min MB", "GB/s",
             "of copy");
  std::mt19937_64 rng(12345);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (const Problem& p : problems) {
    MoeShape shape;
    shape.tokens = p.tokens;
    shape.hidden = p.hidden;
    shape.ffn = p.ffn;
    shape.experts = p.experts;
    shape.top_k = p.top_k;
    shape.block = 128;
    RoutingWorkspace ws(dev, shape);
    const int64_t T = p.tokens, E = p.experts, K = p.top_k, H = p.hidden;
    // Input sets rotated so that every timed run reads its inputs from HBM, not from the 60 MB L2.
    const int64_t set_bytes = T * E * 4 + T * H * 2;
    const int sets = int(std::clamp<int64_t>(2 * 60'000'000 / set_bytes + 1, 1, 8));
    std::vector<DeviceBuffer> logits, xs;
    for (int i = 0; i < sets; ++i) {
      std::vector<float> l(T * E);
      for (auto& v : l) v = normal(rng);
      logits.emplace_back(dev, l.size() * 4);
      dev.copy_to_device(logits.back().get(), l.data(), l.size() * 4);
      std::vector<uint16_t> xb(T * H, 0x3f80);  // 1.0: gather/scatter move bytes, values do not matter
      xs.emplace_back(dev, xb.size() * 2);
      dev.copy_to_device(xs.back().get(), xb.data(), xb.size() * 2);
    }
    DeviceBuffer xp(dev, int64_t(ws.max_rows()) * H * 2), y(dev, T * H * 2), jittered(dev, T * H * 2);
    RoutingArgs a = ws.args();
    a.lbl_weight = 0.01f;
    a.z_weight = 0.001f;
    a.jitter_eps = 0.01f;
    a.weighted = 1;
    // Expected padded rows under this (near-uniform) routing, for the byte counts.
    const double t_pad = double(T * K);

    // Median over batches of `reps` back-to-back launches (rotating the input sets), each batch timed by
    // one pair of events: per-launch host gaps stay out of the figure even for microsecond kernels.
    auto time_kernel = [&](Op op, auto&& set_inputs) {
      const KernelSpec& spec = ws.spec(op);
      for (int r = 0; r < 3; ++r) {  // warm-up: compile/load, clocks up
        set_inputs(r % sets);
        launch_routing(cache, spec, a, stream.get());
      }
      EventTimer timer(dev);
      std::vector<double> ms;
      for (int batch = 0; batch < 7; ++batch) {
        timer.start(stream.get());
        for (int r = 0; r < opt.reps; ++r) {
          set_inputs(r % sets);
          launch_routing(cache, spec, a, stream.get());
        }
        timer.stop(stream.get());
        ms.push_back(timer.elapsed_ms() / opt.reps);
      }
      return median(ms);
    };
    auto router_in = [&](int i) { a.logits = static_cast<const float*>(logits[i].get()); };
    auto gather_in = [&](int i) { a.x = xs[i].get(); a.y = xp.get(); };
    auto scatter_in = [&](int) { a.x = xp.get(); a.y = y.get(); };
    auto jitter_in = [&](int i) { a.x = xs[i].get(); a.y = jittered.get(); };
    auto none = [&](int) {};

    std::vector<KernelRow> rows;
    rows.push_back({"jitter", time_kernel(Op::Jitter, jitter_in), 2.0 * T * H * 2});
    rows.push_back({"router", time_kernel(Op::Router, router_in), T * E * 4.0 + T * K * 8.0});
    rows.push_back({"bins", time_kernel(Op::Bins, none), route_chunks(T) * E * 12.0 + E * 12.0});
    rows.push_back({"permute", time_kernel(Op::Permute, none), T * K * 16.0});
    const double blocks = t_pad / 128 * (p.ffn / 128);
    rows.push_back({"topology", time_kernel(Op::Topology, none), blocks * 16.0});
    rows.push_back({"gather", time_kernel(Op::Gather, gather_in), T * H * 2.0 + t_pad * H * 2.0 + T * K * 4.0});
    rows.push_back({"scatter", time_kernel(Op::Scatter, scatter_in), t_pad * H * 2.0 + T * H * 2.0 + T * K * 8.0});
    // The router's backward: logits and the weights' gradient in, dlogits out in fp32 and in bf16 (the
    // expert ids and counts are the router's and Bins' above).
    DeviceBuffer dweights(dev, T * K * 4), dlogits(dev, T * E * 4), dlogits_lp(dev, T * E * 2);
    dev.fill_u8(dweights.get(), 0x3c, T * K * 4);  // 0.0115 each
    auto router_grad_in = [&](int i) {
      a.logits = static_cast<const float*>(logits[i].get());
      a.dweights = static_cast<float*>(dweights.get());
      a.dlogits = static_cast<float*>(dlogits.get());
      a.dlogits_lp = dlogits_lp.get();
      a.d_lbl = 1.f;
      a.d_z = 1.f;
    };
    rows.push_back({"router_grad", time_kernel(Op::RouterGrad, router_grad_in), T * E * 10.0 + T * K * 8.0});
    // The scatter's backward: dy [T, H] (the rotated x sets) and the expert output rows (xp) in, the rows'
    // gradient and dw out.
    DeviceBuffer dy_rows(dev, int64_t(ws.max_rows()) * H * 2), dw(dev, T * K * 4);
    auto scatter_grad_in = [&](int i) {
      a.x = xs[i].get(); a.aux = xp.get(); a.y = dy_rows.get(); a.dweights = static_cast<float*>(dw.get());
    };
    rows.push_back({"scatter_grad", time_kernel(Op::ScatterGrad, scatter_grad_in),
                    T * H * 2.0 + 2 * t_pad * H * 2.0 + T * K * 12.0});

    // The gated experts' elementwise kernels on the sparse data [blocks, B, B] of the routed block rows
    // (Bins above left them in the workspace): Glu reads a and g and writes h; GluGrad reads dh, a and g
    // and writes da and dg (here in place, into dh's and g's buffers). Buffers far larger than L2.
    const int64_t sparse_bytes = int64_t(ws.max_rows()) * p.ffn * 2;
    DeviceBuffer sa(dev, sparse_bytes), sg(dev, sparse_bytes), sh(dev, sparse_bytes);
    for (DeviceBuffer* b : {&sa, &sg, &sh}) dev.fill_u8(b->get(), 0x3f, sparse_bytes);  // bf16 0.746
    auto glu_in = [&](int) { a.x = sa.get(); a.aux = sg.get(); a.y = sh.get(); };
    auto glu_grad_in = [&](int) {
      a.x = sh.get(); a.aux = sa.get(); a.x2 = sg.get(); a.y = sh.get(); a.y2 = sg.get();
    };
    const double sparse_elements = t_pad * double(p.ffn);
    rows.push_back({"glu", time_kernel(Op::Glu, glu_in), 3 * sparse_elements * 2});
    rows.push_back({"glu_grad", time_kernel(Op::GluGrad, glu_grad_in), 5 * sparse_elements * 2});
    a.x2 = nullptr;
    a.y2 = nullptr;

    // The chain as one graph: router → gather, then the scatter.
    a.logits = static_cast<const float*>(logits[0].get());
    CapturedGraph graph(dev, stream.get(), [&] {
      route_forward(cache, ws, RouteForward{a.logits, xs[0].get(), xp.get(), 0.01f, 0.001f}, stream.get());
      route_combine(cache, ws, xp.get(), y.get(), stream.get());
    });
    graph.launch(stream.get());  // warm-up
    EventTimer timer(dev);
    std::vector<double> chain;
    for (int batch = 0; batch < 7; ++batch) {
      timer.start(stream.get());
      for (int r = 0; r < opt.reps; ++r) graph.launch(stream.get());
      timer.stop(stream.get());
      chain.push_back(timer.elapsed_ms() / opt.reps);
    }
    const double chain_ms = median(chain);
    const double matmul_sol_ms = 2 * 2.0 * T * K * H * p.ffn / kGemmFlopsPerSec * 1e3;
    // What no unfused chain can beat: the gather reading x once and writing its T·K rows, the scatter
    // reading them back and writing y, at the copy rate (padding, the router and the weights not counted).
    const double floor_ms = 2 * (T * H * 2.0 + T * K * H * 2.0) / kCopyBytesPerSec * 1e3;

    std::string json = fmt::format("{{\"problem\": \"{}\", \"tokens\": {}, \"experts\": {}, \"top_k\": {}, \"hidden\": {}, \"ffn\": {}",
                                   p.label(), T, E, K, H, p.ffn);
    for (const KernelRow& r : rows) {
      const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
      fmt::print("{:<20} {:<12} {:>9.1f} {:>10.1f} {:>9.0f} {:>6.0f}%\n", p.label(), r.name, r.ms * 1e3,
                 r.bytes / 1e6, gbs, 100 * gbs * 1e9 / kCopyBytesPerSec);
      json += fmt::format(", \"{}_us\": {:.2f}, \"{}_copy_fraction\": {:.3f}", r.name, r.ms * 1e3, r.name,
                          r.bytes / (r.ms * 1e-3) / kCopyBytesPerSec);
    }
    fmt::print("{:<20} {:<12} {:>9.1f}   forward expert matmul at SOL {:.1f} us: chain = {:.1f}% of it "
               "(an unfused gather + scatter at the copy rate: {:.1f}%)\n",
               p.label(), "chain", chain_ms * 1e3, matmul_sol_ms * 1e3, 100 * chain_ms / matmul_sol_ms,
               100 * floor_ms / matmul_sol_ms);
    json += fmt::format(", \"chain_us\": {:.2f}, \"matmul_sol_us\": {:.2f}, \"chain_fraction\": {:.4f}, "
                        "\"chain_floor_fraction\": {:.4f}}}",
                        chain_ms * 1e3, matmul_sol_ms * 1e3, chain_ms / matmul_sol_ms, floor_ms / matmul_sol_ms);
    if (opt.json) fmt::print("{}\n", json);
  }
  return 0;
}

}  // namespace dmoe::bench

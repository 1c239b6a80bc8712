// The whole routing chain on the GPU: router → bins → permutation → topology → gather, then the scatter,
// captured once in a CUDA graph and replayed on fresh routings (no host synchronization inside), each
// replay checked against the CPU references and the semantics' oracles.
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>

#include "dmoe/routing.hpp"
#include "dmoe/routing_reference.hpp"
#include "test_util.hpp"

using namespace dmoe;

namespace {

using test::cache;
using test::device;

enum class Routing { Normal, Zipf, OneExpert, EmptyExperts };

// Random logits (never zeros) with an expert bias that shapes the routing.
std::vector<float> make_logits(int64_t T, int E, Routing kind) {
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> bias(E, 0.f);
  for (int e = 0; e < E; ++e) {
    if (kind == Routing::Zipf) bias[e] = -1.5f * std::log(float(e + 1));        // p_e ∝ 1 / (e+1)^1.5
    if (kind == Routing::OneExpert) bias[e] = e == E / 2 ? 40.f : 0.f;          // everything to one expert
    if (kind == Routing::EmptyExperts) bias[e] = e % 3 == 1 ? -40.f : 0.f;      // a third never chosen
  }
  std::vector<float> logits(T * E);
  for (int64_t t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      float v = n(test::rng()) + bias[e];
      logits[t * E + e] = v == 0.f ? 0.25f : v;
    }
  return logits;
}

using test::download;

struct ChainCase {
  int64_t tokens;
  int hidden, ffn, experts, top_k, block;
  Routing routing = Routing::Normal;
};

void run_chain(const ChainCase& c, int replays) {
  INFO("T=" << c.tokens << " H=" << c.hidden << " E=" << c.experts << " K=" << c.top_k << " B=" << c.block
            << " routing=" << int(c.routing));
  Device& dev = device();
  MoeShape shape;
  shape.tokens = c.tokens;
  shape.hidden = c.hidden;
  shape.ffn = c.ffn;
  shape.experts = c.experts;
  shape.top_k = c.top_k;
  shape.block = c.block;
  RoutingWorkspace ws(dev, shape);
  const int64_t T = c.tokens, H = c.hidden, E = c.experts, K = c.top_k;
  const int64_t rows_cap = ws.max_rows();
  DeviceBuffer logits(dev, T * E * 4), x(dev, T * H * 2), xp(dev, rows_cap * H * 2), y(dev, T * H * 2);
  OwnedStream stream(dev);
  const float lbl_w = 0.01f, z_w = 0.001f;

  // Capture once: the chain must contain no host synchronization, or the capture fails.
  CapturedGraph graph(dev, stream.get(), [&] {
    route_forward(cache(), ws, RouteForward{static_cast<const float*>(logits.get()), x.get(), xp.get(), lbl_w, z_w},
                  stream.get());
    route_combine(cache(), ws, xp.get(), y.get(), stream.get());
  });

  for (int replay = 0; replay < replays; ++replay) {
    INFO("replay " << replay);
    const std::vector<float> host_logits = make_logits(T, int(E), c.routing);
    const test::HostOperand host_x = test::random_operand(T * H, DType::BF16);
    dev.copy_to_device(logits.get(), host_logits.data(), host_logits.size() * 4);
    dev.copy_to_device(x.get(), host_x.bits.data(), host_x.bits.size() * 2);
    dev.fill_u8(xp.get(), 0xff, rows_cap * H * 2);
    dev.fill_u8(y.get(), 0xff, T * H * 2);
    dev.synchronize();
    graph.launch(stream.get());
    dev.synchronize(stream.get());

    const RoutingState& s = ws.state();
    const auto ids = download<int32_t>(s.expert_ids, T * K);
    const auto weights = download<float>(s.weights, T * K);
    const reference::RouterResult ref = reference::route(host_logits, T, int(E), int(K), 0, lbl_w, z_w);
    // The selection equals the reference's, except where two probabilities tie within fp32 rounding.
    int64_t real_mismatches = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) {
        const int32_t got = ids[t * K + k], want = ref.expert_ids[t * K + k];
        if (got == want) continue;
        const float* l = &host_logits[t * E];
        real_mismatches += got < 0 || got >= E || std::abs(double(l[got]) - double(l[want])) > 1e-5;
      }
    CHECK(real_mismatches == 0);
    double werr = 0;
    for (int64_t i = 0; i < T * K; ++i) werr = std::max(werr, std::abs(weights[i] - ref.weights[i]));
    CHECK(werr < 1e-5);

    // Oracle 1: every assignment exactly once, Σ count = T·K.
    const reference::Permutation perm = reference::permute(ids, int(E), int(K), c.block);
    const auto counts = download<int32_t>(s.counts, E);
    const auto padded_bins = download<int32_t>(s.padded_bins, E);
    CHECK(std::accumulate(counts.begin(), counts.end(), int64_t{0}) == T * K);
    for (int64_t e = 0; e < E; ++e) {
      CHECK(counts[e] == perm.counts[e]);
      CHECK(padded_bins[e] == perm.padded_bins[e]);
    }
    const auto indices = download<int32_t>(s.indices, T * K);
    const auto rows = download<int32_t>(s.rows, T * K);
    CHECK(indices == perm.indices);
    CHECK(rows == perm.rows);
    std::vector<int> seen(T * K, 0);
    for (int32_t i : indices) seen.at(i)++;
    CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));

    const auto losses = download<float>(s.losses, 2);
    CHECK(losses[0] == doctest::Approx(ref.lbl).epsilon(1e-4));
    CHECK(losses[1] == doctest::Approx(ref.z).epsilon(1e-4));

    // Oracle 3: the topology equals the closed form.
    const reference::HostTopology topo = reference::topology_from_counts(perm.counts, c.block, c.ffn);
    const TopologyOut& to = ws.topology_out();
    CHECK(download<int32_t>(s.block_rows, 1)[0] == topo.block_rows);
    CHECK(download<int32_t>(to.row_indices, topo.blocks()) == topo.row_indices);
    CHECK(download<int32_t>(to.column_indices, topo.blocks()) == topo.column_indices);
    CHECK(download<int32_t>(to.offsets, topo.block_rows + 1) == topo.offsets);
    CHECK(download<int32_t>(to.column_indices_t, topo.blocks()) == topo.column_indices_t);
    CHECK(download<int32_t>(to.offsets_t, topo.offsets_t.size()) == topo.offsets_t);
    CHECK(download<int32_t>(to.block_offsets_t, topo.blocks()) == topo.block_offsets_t);

    // Oracle 2: the gather copies rows exactly, padding rows are zero, nothing past T_pad is written.
    const auto xp_bits = download<uint16_t>(xp.get(), rows_cap * H);
    const std::vector<double> gathered = reference::gather(host_x.values, perm, int(K), int(H));
    int64_t mismatched = 0, clobbered = 0;
    for (int64_t i = 0; i < rows_cap * H; ++i) {
      if (i < perm.padded_rows * H)
        mismatched += reference::from_bf16(xp_bits[i]) != gathered[i];
      else
        clobbered += xp_bits[i] != 0xffff;
    }
    CHECK(mismatched == 0);
    CHECK(clobbered == 0);

    // The scatter back with the routing weights: y[t] = Σ_k w[t,k] · x[t] (the gather's rows).
    std::vector<float> xp_values(perm.padded_rows * H);
    for (int64_t i = 0; i < perm.padded_rows * H; ++i) xp_values[i] = reference::from_bf16(xp_bits[i]);
    const std::vector<double> y_ref = reference::scatter(xp_values, perm, ref.weights, T, int(K), int(H));
    const auto y_bits = download<uint16_t>(y.get(), T * H);
    std::vector<double> y_out(T * H);
    for (int64_t i = 0; i < T * H; ++i) y_out[i] = reference::from_bf16(y_bits[i]);
    const double err = reference::relative_error(y_ref, y_out);
    INFO("scatter rel err " << err);
    CHECK(err < 1e-2);
  }
}

}  // namespace

TEST_CASE("routing chain: captured once in a CUDA graph, replayed on new routings") {
  run_chain({4096, 256, 512, 8, 2, 128, Routing::Normal}, 3);
  run_chain({3000, 128, 256, 16, 4, 64, Routing::Zipf}, 2);  // T not a multiple of the block or the chunk
  run_chain({2048, 128, 512, 8, 1, 256, Routing::OneExpert}, 2);
  run_chain({2500, 64, 128, 12, 2, 128, Routing::EmptyExperts}, 2);
}

TEST_CASE("routing chain: degenerate shapes") {
  run_chain({777, 64, 128, 1, 1, 128, Routing::Normal}, 1);  // E = 1
  run_chain({513, 64, 128, 6, 6, 64, Routing::Normal}, 1);   // K = E
  run_chain({1, 64, 128, 4, 2, 128, Routing::Normal}, 1);    // one token
}

TEST_CASE("routing chain: many experts and many assignments") {
  run_chain({8192, 64, 128, 256, 8, 128, Routing::Zipf}, 1);
  run_chain({524288, 64, 128, 64, 8, 128, Routing::Normal}, 1);  // T·K = 4,194,304
}

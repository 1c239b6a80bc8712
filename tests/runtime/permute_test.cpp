// GPU tests of Permute, Topology, Gather, Scatter (with one source and two) and ScatterGrad
// (templates/dmoe/kernels/permute.cuh, topology.cuh) against the CPU references. The Router's and Bins'
// outputs are computed on the host from reference::permute and uploaded, so these tests depend on no
// other routing kernel.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "dmoe/reference.hpp"
#include "dmoe/routing.hpp"
#include "dmoe/routing_reference.hpp"
#include "test_util.hpp"

using namespace dmoe;

namespace {

using test::cache;
using test::device;

using test::arch;

enum class Kind { Uniform, Zipf, OneExpert, SomeEmpty };

struct Case {
  Kind kind;
  int64_t tokens;
  int experts, top_k, block, hidden, ffn;
  DType dtype = DType::BF16;
};

std::string describe(const Case& c) {
  const char* kind = c.kind == Kind::Uniform ? "uniform"
                     : c.kind == Kind::Zipf  ? "zipf"
                     : c.kind == Kind::OneExpert ? "one-expert"
                                                 : "some-empty";
  return std::string(kind) + " T=" + std::to_string(c.tokens) + " E=" + std::to_string(c.experts) +
         " K=" + std::to_string(c.top_k) + " B=" + std::to_string(c.block) + " H=" + std::to_string(c.hidden) +
         " F=" + std::to_string(c.ffn) + " " + std::string(to_string(c.dtype));
}

// A fast generator for the big cases (mt19937 + distributions dominate otherwise).
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
};

// T·K expert ids with K distinct experts per token, drawn from the kind's distribution over experts.
std::vector<int32_t> make_routing(const Case& c, SplitMix& g) {
  const int E = c.experts, K = c.top_k;
  std::vector<double> p(E, 1.0);
  if (c.kind == Kind::Zipf)
    for (int e = 0; e < E; ++e) p[e] = 1.0 / std::pow(e + 1.0, 1.1);
  if (c.kind == Kind::OneExpert)  // every token to the same K experts (one when K = 1)
    for (int e = 0; e < E; ++e) p[e] = (e >= (E - K) / 2 && e < (E - K) / 2 + K) ? 1.0 : 0.0;
  if (c.kind == Kind::SomeEmpty)  // every third expert empty, while K distinct ones remain
    for (int e = 0, empty = 0; e < E && E - empty > K; e += 3, ++empty) p[e] = 0.0;
  std::vector<int32_t> support;
  std::vector<double> cdf;
  double total = 0;
  for (int e = 0; e < E; ++e)
    if (p[e] > 0) {
      support.push_back(e);
      total += p[e];
      cdf.push_back(total);
    }
  REQUIRE(int(support.size()) >= K);
  std::vector<int32_t> ids(c.tokens * K);
  std::vector<int32_t> perm = support;
  for (int64_t t = 0; t < c.tokens; ++t) {
    int32_t* out = ids.data() + t * K;
    if (int(support.size()) == K) {  // the whole support, in a random order
      for (int k = K - 1; k > 0; --k) std::swap(perm[k], perm[g.next() % (k + 1)]);
      std::copy(perm.begin(), perm.end(), out);
      continue;
    }
    for (int k = 0; k < K;) {
      const double u = g.uniform() * total;
      const size_t j = std::min<size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin(), cdf.size() - 1);
      const int32_t e = support[j];
      if (std::find(out, out + k, e) == out + k) out[k++] = e;
    }
  }
  return ids;
}

// Random 16-bit values in (−1, 1), never zero: bits and the float they are.
struct Operand {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};

float from_bits(uint16_t b, DType d) { return d == DType::BF16 ? reference::from_bf16(b) : reference::from_fp16(b); }

Operand random_operand(int64_t n, DType d, SplitMix& g) {
  Operand o;
  o.bits.resize(n);
  o.values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    float v = float(g.uniform() * 2.0 - 1.0);
    if (v == 0.f) v = 0.5f;
    o.bits[i] = d == DType::BF16 ? reference::to_bf16(v) : reference::to_fp16(v);
    o.values[i] = from_bits(o.bits[i], d);
  }
  return o;
}

using test::upload;

using test::download;

int64_t mismatches(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t n, int64_t from = 0) {
  int64_t bad = 0;
  for (int64_t i = from; i < n; ++i) bad += a[i] != b[i];
  return bad;
}

// ‖out − ref‖ / ‖ref‖ over the first n elements of 16-bit outputs; NaN or Inf anywhere gives +Inf.
double relative_error(const std::vector<double>& ref, const std::vector<uint16_t>& out, int64_t n, DType d) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double o = from_bits(out[i], d);
    if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void run(const Case& c) {
  INFO(describe(c));
  const auto start = std::chrono::steady_clock::now();
  Device& dev = device();
  SplitMix g{test::rng()()};
  const int64_t T = c.tokens, K = c.top_k, E = c.experts, B = c.block, H = c.hidden, FB = c.ffn / c.block;
  const int64_t n = T * K;

  MoeShape shape;
  shape.hidden = H;
  shape.ffn = c.ffn;
  shape.experts = E;
  shape.top_k = K;
  shape.block = B;
  shape.tokens = T;
  shape.dtype = c.dtype;
  RoutingWorkspace ws(dev, shape);
  const RoutingState& s = ws.state();
  const TopologyOut& to = ws.topology_out();
  const int64_t max_rows = ws.max_rows(), max_block_rows = ws.max_block_rows();
  const int64_t max_blocks = max_block_rows * FB;

  // The Router's and Bins' outputs, on the host.
  const std::vector<int32_t> ids = make_routing(c, g);
  const reference::Permutation p = reference::permute(ids, int(E), int(K), int(B));
  const int64_t t_pad = p.padded_rows;
  REQUIRE(t_pad <= max_rows);
  std::vector<float> weights(n);
  for (auto& w : weights) w = float(0.05 + 0.95 * g.uniform());
  const int64_t chunks = route_chunks(T);
  std::vector<int32_t> chunk_hist(chunks * E, 0);
  for (int64_t i = 0; i < n; ++i) ++chunk_hist[(i / (kRouteChunkTokens * K)) * E + ids[i]];
  for (int64_t e = 0; e < E; ++e) {  // exclusive prefix over chunks, per expert (what Bins leaves)
    int32_t run = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int32_t v = chunk_hist[ch * E + e];
      chunk_hist[ch * E + e] = run;
      run += v;
    }
  }
  std::vector<int32_t> counts(E), bins(E), padded_bins(E);
  for (int64_t e = 0; e < E; ++e) {
    counts[e] = int32_t(p.counts[e]);
    bins[e] = int32_t(p.bins[e]);
    padded_bins[e] = int32_t(p.padded_bins[e]);
  }
  upload(s.expert_ids, ids);
  upload(s.weights, weights);
  upload(s.chunk_offsets, chunk_hist);  // the prefixes Bins would write
  upload(s.counts, counts);
  upload(s.bins, bins);
  upload(s.padded_bins, padded_bins);
  upload(s.block_rows, std::vector<int32_t>{int32_t(t_pad / B)});
  for (void* out : {(void*)s.rows, (void*)s.indices, (void*)s.bin_ids}) dev.fill_u8(out, 0xff, n * 4);
  dev.fill_u8(s.row_tokens, 0x7f, max_rows * 4);  // poison: 0x7f7f7f7f is neither a token nor −1
  dev.fill_u8(to.row_indices, 0xff, max_blocks * 4);
  dev.fill_u8(to.column_indices, 0xff, max_blocks * 4);
  dev.fill_u8(to.column_indices_t, 0xff, max_blocks * 4);
  dev.fill_u8(to.block_offsets_t, 0xff, max_blocks * 4);
  dev.fill_u8(to.offsets, 0xff, (max_block_rows + 1) * 4);
  dev.fill_u8(to.offsets_t, 0xff, (E * FB + 1) * 4);

  RoutingArgs args{};
  args.s = s;
  args.topo = to;
  args.tokens = int32_t(T);
  args.max_rows = int32_t(max_rows);
  auto launch = [&](Op op) {
    launch_routing(cache(), ws.spec(op, arch()), args, nullptr);
    dev.synchronize();
  };

  // Permute: exact.
  launch(Op::Permute);
  {
    const auto indices = download<int32_t>(s.indices, n), bin_ids = download<int32_t>(s.bin_ids, n),
               rows = download<int32_t>(s.rows, n);
    CHECK(mismatches(indices, p.indices, n) == 0);
    CHECK(mismatches(bin_ids, p.bin_ids, n) == 0);
    CHECK(mismatches(rows, p.rows, n) == 0);
  }

  // Topology: the closed form on [0, blocks), the generic transpose too; nothing past it written.
  launch(Op::Topology);
  {
    const reference::HostTopology ref = reference::topology_from_counts(p.counts, int32_t(B), c.ffn);
    const reference::HostTopology sorted = reference::with_sorted_transpose(ref);
    const int64_t blocks = ref.blocks();
    REQUIRE(blocks <= max_blocks);
    const auto ri = download<int32_t>(to.row_indices, max_blocks), ci = download<int32_t>(to.column_indices, max_blocks),
               cit = download<int32_t>(to.column_indices_t, max_blocks),
               bot = download<int32_t>(to.block_offsets_t, max_blocks),
               off = download<int32_t>(to.offsets, max_block_rows + 1),
               offt = download<int32_t>(to.offsets_t, E * FB + 1);
    CHECK(mismatches(ri, ref.row_indices, blocks) == 0);
    CHECK(mismatches(ci, ref.column_indices, blocks) == 0);
    CHECK(mismatches(cit, ref.column_indices_t, blocks) == 0);
    CHECK(mismatches(bot, ref.block_offsets_t, blocks) == 0);
    CHECK(mismatches(cit, sorted.column_indices_t, blocks) == 0);
    CHECK(mismatches(bot, sorted.block_offsets_t, blocks) == 0);
    CHECK(mismatches(off, ref.offsets, ref.block_rows + 1) == 0);
    CHECK(offt == ref.offsets_t);
    CHECK(offt == sorted.offsets_t);
    int64_t clobbered = 0, bad_tail = 0;
    for (int64_t b = blocks; b < max_blocks; ++b) clobbered += ri[b] != -1 || ci[b] != -1 || cit[b] != -1 || bot[b] != -1;
    for (int64_t r = ref.block_rows + 1; r <= max_block_rows; ++r) bad_tail += off[r] != blocks;  // empty rows
    CHECK(clobbered == 0);
    CHECK(bad_tail == 0);
  }

  // The rows map a gathering SDD reads: Permute writes each real row's token, Gather with no output
  // rows (the map only) the padding rows' −1; nothing past T_pad. Then the full Gather below rewrites the
  // same map.
  std::vector<int32_t> source(t_pad, -1);  // token of each padded row, −1 for padding
  for (int64_t i = 0; i < n; ++i) source[p.rows[i]] = int32_t(i / K);
  auto check_row_tokens = [&] {
    const auto map = download<int32_t>(s.row_tokens, max_rows);
    int64_t wrong = 0, clobbered = 0;
    for (int64_t r = 0; r < t_pad; ++r) wrong += map[r] != source[r];
    for (int64_t r = t_pad; r < max_rows; ++r) clobbered += map[r] != 0x7f7f7f7f;
    CHECK(wrong == 0);
    CHECK(clobbered == 0);
  };
  launch(Op::Gather);  // args.y is null: the rows map only
  check_row_tokens();
  dev.fill_u8(s.row_tokens, 0x7f, max_rows * 4);
  launch(Op::Permute);  // again: the real rows' entries, before the full Gather completes the map

  // Gather: a bitwise copy, padding rows zero, rows past T_pad untouched.
  const Operand x = random_operand(T * H, c.dtype, g);
  DeviceBuffer dx(dev, x.bits.size() * 2), dy_rows(dev, max_rows * H * 2);
  upload(dx.get(), x.bits);
  dev.fill_u8(dy_rows.get(), 0xff, max_rows * H * 2);
  args.x = dx.get();
  args.y = dy_rows.get();
  launch(Op::Gather);
  {
    const auto y = download<uint16_t>(dy_rows.get(), max_rows * H);
    check_row_tokens();
    int64_t wrong = 0, nonzero_padding = 0, clobbered = 0;
    for (int64_t r = 0; r < t_pad; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const uint16_t v = y[r * H + h];
        if (source[r] < 0)
          nonzero_padding += v != 0;
        else
          wrong += v != x.bits[source[r] * H + h];
      }
    for (int64_t e = t_pad * H; e < max_rows * H; ++e) clobbered += y[e] != 0xffff;
    CHECK(wrong == 0);
    CHECK(nonzero_padding == 0);
    CHECK(clobbered == 0);
    if (t_pad * H <= (int64_t{1} << 24)) {  // the reference agrees (small cases: it is fp64 [T_pad, H])
      const auto ref = reference::gather(x.values, p, int(K), int(H));
      int64_t differ = 0;
      for (int64_t e = 0; e < t_pad * H; ++e) differ += double(from_bits(y[e], c.dtype)) != ref[e];
      CHECK(differ == 0);
    }
  }

  // The expert output rows for Scatter and ScatterGrad: random up to T_pad (padding rows too: no
  // assignment points there), NaN past it, which must never be read.
  Operand rows = random_operand(t_pad * H, c.dtype, g);
  rows.bits.resize(max_rows * H, 0xffff);
  rows.values.resize(max_rows * H, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer drows(dev, max_rows * H * 2), dy_tok(dev, std::max<int64_t>(T * H, 1) * 2);
  upload(drows.get(), rows.bits);
  const double tol = c.dtype == DType::BF16 ? 1e-2 : 2e-3;
  const std::vector<double> w64(weights.begin(), weights.end());

  // Scatter, unweighted (gather's backward) and weighted.
  for (int weighted : {0, 1}) {
    INFO("weighted = " << weighted);
    dev.fill_u8(dy_tok.get(), 0xff, T * H * 2);
    args.x = drows.get();
    args.y = dy_tok.get();
    args.weighted = weighted;
    launch(Op::Scatter);
    const auto y = download<uint16_t>(dy_tok.get(), T * H);
    const auto ref = reference::scatter(rows.values, p, weighted ? std::span<const double>(w64) : std::span<const double>{},
                                        T, int(K), int(H));
    const double err = relative_error(ref, y, T * H, c.dtype);
    INFO("scatter relative Frobenius error " << err);
    CHECK(err <= tol);
  }
  args.weighted = 0;

  // Scatter with a second source (the gated experts' dX = dA·W1 + dG·V1): each row is x[r] + x2[r].
  {
    Operand rows2 = random_operand(t_pad * H, c.dtype, g);
    rows2.bits.resize(max_rows * H, 0xffff);
    rows2.values.resize(max_rows * H, std::numeric_limits<float>::quiet_NaN());
    DeviceBuffer drows2(dev, max_rows * H * 2);
    upload(drows2.get(), rows2.bits);
    for (int weighted : {0, 1}) {
      INFO("two sources, weighted = " << weighted);
      dev.fill_u8(dy_tok.get(), 0xff, T * H * 2);
      args.x = drows.get();
      args.x2 = drows2.get();
      args.y = dy_tok.get();
      args.weighted = weighted;
      launch(Op::Scatter);
      const auto y = download<uint16_t>(dy_tok.get(), T * H);
      const auto ref = reference::scatter(rows.values, p,
                                          weighted ? std::span<const double>(w64) : std::span<const double>{}, T,
                                          int(K), int(H), rows2.values);
      const double err = relative_error(ref, y, T * H, c.dtype);
      INFO("scatter (two sources) relative Frobenius error " << err);
      CHECK(err <= tol);
    }
    args.x2 = nullptr;
    args.weighted = 0;
  }

  // ScatterGrad: dy [T, H] → the rows' gradient (padding rows zero, past T_pad untouched) and dw.
  {
    const Operand dy = random_operand(T * H, c.dtype, g);
    DeviceBuffer ddy(dev, std::max<int64_t>(T * H, 1) * 2), ddw(dev, std::max<int64_t>(n, 1) * 4);
    upload(ddy.get(), dy.bits);
    dev.fill_u8(dy_rows.get(), 0xff, max_rows * H * 2);
    dev.fill_u8(ddw.get(), 0xff, n * 4);
    args.x = ddy.get();
    args.y = dy_rows.get();
    args.aux = drows.get();
    args.dweights = static_cast<float*>(ddw.get());
    launch(Op::ScatterGrad);
    const auto d_rows = download<uint16_t>(dy_rows.get(), max_rows * H);
    const auto dw = download<float>(ddw.get(), n);
    const reference::ScatterGrad ref = reference::scatter_grad(dy.values, rows.values, p, w64, T, int(K), int(H));
    int64_t far = 0, not_bitwise = 0, clobbered = 0;
    for (int64_t e = 0; e < t_pad * H; ++e) {
      const double r = ref.d_rows[e];
      const uint16_t rb = c.dtype == DType::BF16 ? reference::to_bf16(float(r)) : reference::to_fp16(float(r));
      const double o = from_bits(d_rows[e], c.dtype);
      if (d_rows[e] == rb) continue;
      ++not_bitwise;
      far += !(std::abs(o - r) <= tol * std::abs(r));
    }
    for (int64_t e = t_pad * H; e < max_rows * H; ++e) clobbered += d_rows[e] != 0xffff;
    const double err = relative_error(ref.d_rows, d_rows, t_pad * H, c.dtype);
    INFO("scatter_grad rows: relative error " << err << ", " << not_bitwise << " not bitwise equal");
    CHECK(far == 0);
    CHECK(err <= tol);
    CHECK(clobbered == 0);
    double num = 0, den = 0;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
      finite &= std::isfinite(dw[i]);
      num += (dw[i] - ref.dw[i]) * (dw[i] - ref.dw[i]);
      den += ref.dw[i] * ref.dw[i];
    }
    const double dw_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    INFO("dw relative error " << dw_err);
    CHECK(finite);
    CHECK(dw_err <= 1e-3);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE(describe(c) << ": T_pad " << t_pad << " of capacity " << max_rows << ", " << secs << " s");
}

}  // namespace

TEST_CASE("permute chain: routings of every kind") {
  run({Kind::Uniform, 1000, 8, 2, 128, 256, 256});
  run({Kind::Zipf, 777, 64, 6, 64, 128, 128});
  run({Kind::OneExpert, 513, 16, 1, 256, 128, 512});
  run({Kind::OneExpert, 600, 16, 4, 128, 64, 256});
  run({Kind::SomeEmpty, 3000, 32, 4, 128, 128, 256});
}

TEST_CASE("permute chain: degenerate shapes") {
  run({Kind::Uniform, 300, 1, 1, 64, 64, 64});     // E = 1
  run({Kind::Uniform, 257, 4, 4, 128, 192, 256});  // K = E
  run({Kind::Zipf, 129, 8, 8, 256, 64, 256});      // K = E
  run({Kind::Uniform, 1, 8, 2, 128, 64, 128});     // one token
  run({Kind::Zipf, 200, 16, 12, 64, 128, 64});     // K > 8: the scatter's rows stay in memory
  run({Kind::Uniform, 999, 8, 2, 128, 256, 256, DType::FP16});
}

TEST_CASE("permute chain: wide rows") {
  run({Kind::Uniform, 64, 8, 2, 64, 4160, 128});   // H/8 = 520 vectors: not a multiple of the warp
  run({Kind::Zipf, 40, 4, 1, 128, 16384, 128});    // the widest rows
  run({Kind::Uniform, 24, 8, 3, 64, 7168, 128, DType::FP16});
}

TEST_CASE("permute chain: large routings") {
  run({Kind::Zipf, 65536, 256, 8, 128, 64, 256});
  run({Kind::SomeEmpty, 100003, 256, 2, 256, 64, 256});
  run({Kind::Zipf, 1000003, 128, 2, 64, 64, 128});
  run({Kind::Uniform, 524288, 256, 8, 128, 64, 256});  // T·K = 4,194,304
}

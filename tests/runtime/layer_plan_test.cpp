// The layer's device-memory plan (memory_plan in dmoe/layer.hpp), without a GPU: every buffer's size from
// the shape, recomputed here from dmoe-semantics.md's definitions (T_pad ≤ T·K + E·(B − 1), rounded up to
// B; the routing workspace's arrays 256-byte aligned), and what each option adds or removes.
#include <doctest/doctest.h>

#include <cmath>

#include "dmoe/cublaslt.hpp"
#include "dmoe/layer.hpp"
#include "dmoe/routing.hpp"

using namespace dmoe;

namespace {

size_t aligned(int64_t elems) { return size_t((std::max<int64_t>(elems, 1) * 4 + 255) / 256 * 256); }

// The routing workspace's 20 arrays (routing_args.cuh: RoutingState, TopologyOut), each 256-byte aligned.
size_t routing_bytes(const MoeShape& s) {
  const int64_t T = s.tokens, K = s.top_k, E = s.experts, B = s.block, fb = s.ffn / B;
  const int64_t chunks = (T + 255) / 256, block_rows = (T * K + E * (B - 1) + B - 1) / B;
  const int64_t blocks = block_rows * fb;
  size_t n = 5 * aligned(T * K) + 3 * aligned(chunks * E) + aligned(chunks) + 3 * aligned(E) + aligned(1) +
             aligned(2);
  n += 4 * aligned(blocks) + aligned(block_rows + 1) + aligned(E * fb + 1);
  n += aligned(block_rows * B);  // the rows map (RoutingState::row_tokens), one entry per padded row
  return n;
}

MoeShape shape(int64_t T, int64_t H, int64_t F, int64_t E, int64_t K, int64_t B, Activation a, bool gated) {
  MoeShape s;
  s.tokens = T, s.hidden = H, s.ffn = F, s.experts = E, s.top_k = K, s.block = B, s.activation = a, s.gated = gated;
  return s;
}

}  // namespace

TEST_CASE("memory_plan: every buffer of the layer and of a context, by shape") {
  struct Case {
    MoeShape s;
    const char* what;
  } cases[] = {
      {shape(512, 128, 256, 4, 2, 128, Activation::GeluTanh, false), "plain, GELU"},
      {shape(333, 64, 128, 6, 3, 64, Activation::None, false), "plain, no activation"},
      {shape(1000, 256, 512, 8, 2, 256, Activation::Silu, true), "gated SwiGLU"},
      {shape(4096, 512, 256, 64, 8, 128, Activation::Relu, true), "gated, fine-grained"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const MoeShape& s = c.s;
    const size_t T = s.tokens, H = s.hidden, F = s.ffn, E = s.experts, K = s.top_k, B = s.block;
    const size_t t_pad = (T * K + E * (B - 1) + B - 1) / B * B;
    const LayerMemoryPlan p = memory_plan(s, {});
    CHECK(p.rows_grad == t_pad * H * 2);
    CHECK(p.sparse_grad == t_pad * F * 2);
    CHECK(p.dlogits_lp == T * E * 2);
    CHECK(p.dweights == T * K * 4);
    CHECK(p.cublaslt_workspace == CublasLt::kWorkspaceBytes);
    CHECK(p.routing == routing_bytes(s));
    CHECK(size_t(RoutingWorkspace::planned_bytes(s)) == p.routing);
    CHECK(p.logits == T * E * 4);
    CHECK(p.x_perm == t_pad * H * 2);
    const bool keeps_pre = s.gated || s.activation != Activation::None;
    CHECK(p.pre == (keeps_pre ? t_pad * F * 2 : 0));
    CHECK(p.gate == (s.gated ? t_pad * F * 2 : 0));
    CHECK(p.hidden == t_pad * F * 2);
    CHECK(p.y_rows == t_pad * H * 2);
    CHECK(p.layer_bytes() == p.rows_grad + p.sparse_grad + p.dlogits_lp + p.dweights + p.cublaslt_workspace);
    CHECK(p.context_bytes() == p.routing + p.logits + p.x_perm + p.pre + p.gate + p.hidden + p.y_rows);
  }
}

TEST_CASE("memory_plan: refuses what validate refuses") {
  MoeShape s = shape(512, 128, 256, 4, 2, 128, Activation::GeluTanh, false);
  LayerOptions o;
  o.renorm_p = 5;
  CHECK_THROWS_WITH_AS(memory_plan(s, o), doctest::Contains("renorm_p = 5"), InvalidArgument);
  s.tokens = 0;
  CHECK_THROWS_WITH_AS(memory_plan(s, {}), doctest::Contains("tokens = 0"), InvalidArgument);
}

TEST_CASE("memory_plan: recompute keeps the permuted input and the pre-activations, not h nor the expert outputs") {
  for (auto [act, gated] : {std::pair{Activation::GeluTanh, false}, {Activation::None, false},
                            {Activation::Silu, true}, {Activation::None, true}}) {
    INFO(to_string(act) << (gated ? " gated" : ""));
    const MoeShape s = shape(777, 256, 512, 16, 4, 128, act, gated);
    const size_t t_pad = (777 * 4 + 16 * 127 + 127) / 128 * 128, rows = t_pad * 256 * 2, sparse = t_pad * 512 * 2;
    LayerOptions o;
    const LayerMemoryPlan normal = memory_plan(s, o);
    o.recompute = true;
    const LayerMemoryPlan rc = memory_plan(s, o);
    CHECK(rc.hidden == 0);
    CHECK(rc.y_rows == 0);
    CHECK(rc.x_perm == rows);
    CHECK(rc.pre == sparse);  // without activation the SDD output, which is h itself
    CHECK(rc.gate == (gated ? sparse : 0));
    CHECK(rc.routing == normal.routing);
    CHECK(rc.logits == normal.logits);
    // Per context: h and the expert outputs, or only the latter where h was the pre-activation already.
    const bool h_was_pre = !gated && act == Activation::None;
    CHECK(normal.context_bytes() - rc.context_bytes() == (h_was_pre ? rows : sparse + rows));
    // The layer: one [T_pad, H] scratch for the recomputed expert outputs (h reuses the sparse gradient's).
    CHECK(rc.rows_scratch == rows);
    CHECK(rc.layer_bytes() - normal.layer_bytes() == rows);
  }
}

TEST_CASE("memory_plan: jitter adds the router's input [T, H] and the seed state, and refuses eps outside [0, 1)") {
  const MoeShape s = shape(1000, 256, 512, 8, 2, 128, Activation::Silu, true);
  LayerOptions o;
  const LayerMemoryPlan off = memory_plan(s, o);
  CHECK(off.router_input == 0);
  CHECK(off.jitter_state == 0);
  CHECK(off.jitter_seed == 0);
  o.jitter_eps = 0.01f;
  const LayerMemoryPlan on = memory_plan(s, o);
  CHECK(on.router_input == 1000 * 256 * 2);
  CHECK(on.jitter_state == 16);
  CHECK(on.jitter_seed == 16);
  CHECK(on.layer_bytes() - off.layer_bytes() == 1000 * 256 * 2 + 16);
  CHECK(on.context_bytes() - off.context_bytes() == 16);
  for (float eps : {1.0f, -0.5f, std::nanf("")}) {
    o.jitter_eps = eps;
    CHECK_THROWS_WITH_AS(memory_plan(s, o), doctest::Contains("is not in [0, 1)"), InvalidArgument);
  }
}

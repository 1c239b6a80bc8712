#include "dmoe/layer.hpp"

#include <fmt/format.h>

#include <cmath>


#include "dmoe/cublaslt.hpp"
#include "dmoe/products.hpp"
#include "dmoe/routing.hpp"

namespace dmoe {
namespace {

// Checks one caller pointer: present (or absent, where the layer has no use for it) and 16-byte aligned,
// as TMA and the 16-byte vector loads need.
void check_pointer(const void* p, const char* call, const char* name, bool wanted = true) {
  if (!wanted) {
    if (p) throw InvalidArgument(fmt::format("Layer::{}: {} must be null: the layer is not gated", call, name));
    return;
  }
  if (!p) throw InvalidArgument(fmt::format("Layer::{}: {} is null", call, name));
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw InvalidArgument(fmt::format("Layer::{}: {} = {} is not 16-byte aligned", call, name, p));
}

// The weights forward and backward both check.
void check_weights(const LayerWeights& w, const char* call, bool gated) {
  check_pointer(w.router, call, "weights.router");
  check_pointer(w.w1, call, "weights.w1");
  check_pointer(w.w2, call, "weights.w2");
  check_pointer(w.v1, call, "weights.v1", gated);
  if (reinterpret_cast<uintptr_t>(w.expert_bias) % 4 != 0)
    throw InvalidArgument(fmt::format("Layer::{}: weights.expert_bias = {} is not 4-byte aligned (fp32)", call,
                                      static_cast<const void*>(w.expert_bias)));
}

}  // namespace

struct Layer::Impl {
  const Device& dev;
  MoeShape shape;
  LayerOptions opt;
  Allocator alloc;
  KernelCache cache;
  CublasLt lt;
  GemmPlan logits_plan, drouter_plan, dx_router_plan;
  GemmPlan dx_router_jitter_plan;  // jitter: dlogits·Wr, not accumulated (U ⊙ it is added by Jitter)
  bool jitter = false;
  // Products. sdd_fwd: x·W1ᵀ with the activation fused (keeping the pre-activation) for plain layers with
  // an activation, no epilogue otherwise (gated layers apply the activation in the GLU kernel). sdd_bwd:
  // dy·W2ᵀ with the activation's gradient fused (plain layers with an activation).
  KernelSpec sdd_fwd, sdd_plain, sdd_bwd, dsd_nn, dsd_tn;
  // Top-k 1, not gated, wgmma: dX's DSD writes each row straight to its token's row of dx (the rows map;
  // dsd_nn_dx.scatter), so gather's backward (an unweighted copy of T·H elements) is not launched.
  KernelSpec dsd_nn_dx;
  bool fused_act = false;  // plain layer with an activation: the pre-activation is saved
  int32_t max_rows = 0;
  // Backward scratch: the expert-row gradient (dy's rows, then dx's rows), the sparse gradient (with
  // recompute also the hidden activation, forward and backward), the router's; with recompute the expert
  // outputs.
  DeviceBuffer d_rows, d_sparse, dlogits_lp, dweights, rows_scratch;
  // Jitter: the router's input x ⊙ U (then dx's router share), and {base seed, next offset}.
  DeviceBuffer router_x, jitter_state;
  // Phase timers (set_profiling), in LayerProfile's field order.
  static constexpr int kPhases = 9;
  std::vector<std::unique_ptr<EventTimer>> timers;

  LayerMemoryPlan plan;

  Impl(const Device& d, const MoeShape& s, const LayerOptions& o, Allocator a)
      : dev(d), shape(s), opt(o), alloc(a), cache(d), lt(d, a), plan(memory_plan(s, o)) {}

  DeviceBuffer mem(size_t bytes) const { return DeviceBuffer(dev, bytes, alloc); }
  void start(int phase, Stream s) {
    if (!timers.empty()) timers[phase]->start(s);
  }
  void stop(int phase, Stream s) {
    if (!timers.empty()) timers[phase]->stop(s);
  }
};

struct LayerContext::State {
  const Layer::Impl& layer;
  RoutingWorkspace ws;
  DeviceBuffer logits, x_perm, pre, gate, hidden, y_rows, jitter_seed;
  const void* x = nullptr;
  bool saved = false;  // a forward ran and its backward has not

  explicit State(const Layer::Impl& l) : layer(l), ws(l.dev, l.shape, l.opt.renorm_p, l.alloc) {}

  // y = x ⊙ U (+ aux) with this context's noise; `advance`: the forward's launch, which moves the layer's
  // counter on.
  void jitter(KernelCache& cache, const void* x, const void* aux, void* y, bool advance, Stream stream) const {
    RoutingArgs a = ws.args();
    a.x = x;
    a.aux = aux;
    a.y = y;
    a.jitter_eps = layer.opt.jitter_eps;
    a.jitter_seed = static_cast<const uint64_t*>(jitter_seed.get());
    a.jitter_next = advance ? static_cast<uint64_t*>(layer.jitter_state.get()) + 1 : nullptr;
    launch_routing(cache, ws.spec(Op::Jitter), a, stream);
  }

  // One product over this pass's topology.
  void product(KernelCache& cache, const KernelSpec& k, const void* a, const void* b, void* out, void* aux,
               Stream stream) const {
    launch_product(cache, k, ProductArgs{a, b, out, ws.topology(), ws.max_block_rows(), aux}, stream);
  }
};

void validate(const MoeShape& s, const LayerOptions& o) {
  validate(s);
  if (s.tokens <= 0) throw InvalidArgument(fmt::format("tokens = {}: a layer needs a positive token count", s.tokens));
  if (o.renorm_p < 0 || o.renorm_p > 2)
    throw InvalidArgument(fmt::format("renorm_p = {} is not 0 (off), 1 or 2", o.renorm_p));
  for (auto [name, w] : {std::pair{"lbl_weight", o.lbl_weight}, std::pair{"z_weight", o.z_weight}})
    if (!(w >= 0) || !std::isfinite(w))
      throw InvalidArgument(fmt::format("{} = {} is not a finite non-negative weight", name, w));
  if (!(o.jitter_eps >= 0 && o.jitter_eps < 1))
    throw InvalidArgument(fmt::format("jitter_eps = {} is not in [0, 1) (0: off; the noise is U(1 - eps, 1 + eps))",
                                      o.jitter_eps));
}

size_t LayerMemoryPlan::layer_bytes() const {
  return rows_grad + sparse_grad + dlogits_lp + dweights + rows_scratch + router_input + jitter_state +
         cublaslt_workspace;
}

size_t LayerMemoryPlan::context_bytes() const {
  return routing + logits + x_perm + pre + gate + hidden + y_rows + jitter_seed;
}

LayerMemoryPlan memory_plan(const MoeShape& s, const LayerOptions& o) {
  validate(s, o);
  const size_t T = size_t(s.tokens), H = size_t(s.hidden), F = size_t(s.ffn), E = size_t(s.experts);
  const size_t max_rows = size_t(max_padded_rows(s)), elem = 2;  // bf16 and fp16
  const size_t rows = max_rows * H * elem, sparse = max_rows * F * elem;
  const bool fused_act = !s.gated && s.activation != Activation::None;
  LayerMemoryPlan p;
  p.rows_grad = rows;
  p.sparse_grad = sparse;
  p.dlogits_lp = T * E * elem;
  p.dweights = T * size_t(s.top_k) * 4;
  p.rows_scratch = o.recompute ? rows : 0;
  p.router_input = o.jitter_eps > 0 ? T * H * elem : 0;
  p.jitter_state = o.jitter_eps > 0 ? 2 * sizeof(uint64_t) : 0;
  p.jitter_seed = o.jitter_eps > 0 ? 2 * sizeof(uint64_t) : 0;
  p.cublaslt_workspace = CublasLt::kWorkspaceBytes;
  p.routing = size_t(RoutingWorkspace::planned_bytes(s));
  p.logits = T * E * 4;
  p.x_perm = rows;
  p.pre = fused_act || s.gated || o.recompute ? sparse : 0;  // recompute, no activation: the hidden itself
  p.gate = s.gated ? sparse : 0;
  p.hidden = o.recompute ? 0 : sparse;
  p.y_rows = o.recompute ? 0 : rows;
  return p;
}

Layer::Layer(const Device& dev, const MoeShape& shape, const LayerOptions& opt, Allocator alloc) {
  validate(shape, opt);
  if (bool(alloc.allocate) != bool(alloc.deallocate))
    throw InvalidArgument("Allocator: allocate and deallocate must both be set, or both be null");
  impl_ = std::make_unique<Impl>(dev, shape, opt, alloc);
  Impl& m = *impl_;
  const MoeShape& s = m.shape;
  m.max_rows = static_cast<int32_t>(max_padded_rows(s));

  m.sdd_plain = tuned_spec(dev, s, Op::SDD, false, true);
  m.fused_act = !s.gated && s.activation != Activation::None;
  m.sdd_fwd = m.sdd_plain;
  m.sdd_bwd = m.sdd_plain;
  if (m.fused_act) {  // the fused SDDs are problems of their own: their own defaults and tuning records
    m.sdd_fwd = tuned_spec(dev, s, Op::SDD, false, true, epilogue_of(s.activation));
    m.sdd_bwd = tuned_spec(dev, s, Op::SDD, false, true, gradient_epilogue_of(s.activation));
  }
  m.dsd_nn = tuned_spec(dev, s, Op::DSD, false, false);
  // dX's DSD scatters its rows to the tokens at top-1 (wgmma only). It shares the plain DSD NN's tuning
  // record, whose tile it takes where it accepts it (tuned_spec), else keeps its default (it refuses
  // chunked staging).
  KernelSpec dx = default_spec(s, Op::DSD, false, false, device_arch(dev.properties()));
  dx.scatter = s.top_k == 1 && !s.gated && dx.tile.mma == Mma::Wgmma;
  m.dsd_nn_dx = tuned_spec(dev, dx, s.tokens);
  m.dsd_tn = tuned_spec(dev, s, Op::DSD, true, false);

  RouterGemms router = router_gemms(s);
  m.logits_plan = m.lt.plan(router.logits);
  m.drouter_plan = m.lt.plan(router.drouter);
  m.dx_router_plan = m.lt.plan(router.dx);
  m.jitter = opt.jitter_eps > 0;
  if (m.jitter) {
    router.dx.accumulate = false;
    m.dx_router_jitter_plan = m.lt.plan(router.dx);
  }

  m.d_rows = m.mem(m.plan.rows_grad);
  m.d_sparse = m.mem(m.plan.sparse_grad);
  m.dlogits_lp = m.mem(m.plan.dlogits_lp);
  m.dweights = m.mem(m.plan.dweights);
  m.rows_scratch = m.mem(m.plan.rows_scratch);
  m.router_x = m.mem(m.plan.router_input);
  m.jitter_state = m.mem(m.plan.jitter_state);
  if (m.jitter) set_seed(0);

  const std::vector<KernelSpec> specs = kernels();
  m.cache.warm_up(specs);
}

Layer::~Layer() = default;

void Layer::set_profiling(bool on) {
  Impl& m = *impl_;
  m.timers.clear();
  if (on)
    for (int i = 0; i < Impl::kPhases; ++i) m.timers.push_back(std::make_unique<EventTimer>(m.dev));
}

LayerProfile Layer::profile() {
  Impl& m = *impl_;
  if (m.timers.empty()) throw InvalidArgument("Layer::profile: profiling is off (set_profiling(true) first)");
  double t[Impl::kPhases] = {};
  // The recompute phase's events are recorded only in that mode (an unrecorded event has no time).
  for (int i = 0; i < Impl::kPhases; ++i)
    if (i != 8 || m.opt.recompute) t[i] = m.timers[i]->elapsed_ms();
  return {t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]};
}

void Layer::set_seed(uint64_t seed) {
  Impl& m = *impl_;
  if (!m.jitter) throw InvalidArgument("Layer::set_seed: jitter is off (LayerOptions::jitter_eps = 0)");
  const uint64_t state[2] = {seed, 0};
  m.dev.synchronize();  // a forward still in flight on another stream would advance the counter after this
  m.dev.copy_to_device(m.jitter_state.get(), state, sizeof state);
  m.dev.synchronize();  // landed before any stream's next forward, non-blocking streams included
}

const MoeShape& Layer::shape() const { return impl_->shape; }
const LayerOptions& Layer::options() const { return impl_->opt; }
const Device& Layer::device() const { return impl_->dev; }

size_t Layer::bytes() const {
  const Impl& m = *impl_;
  return m.d_rows.size() + m.d_sparse.size() + m.dlogits_lp.size() + m.dweights.size() +
         m.rows_scratch.size() + m.router_x.size() + m.jitter_state.size() + CublasLt::kWorkspaceBytes;
}

std::vector<KernelSpec> Layer::kernels() const {
  const Impl& m = *impl_;
  const Arch arch = device_arch(m.dev.properties());
  auto routing = [&](Op op) { return routing_spec(m.shape, op, arch, m.opt.renorm_p); };
  std::vector<KernelSpec> k;
  if (m.jitter) k.push_back(routing(Op::Jitter));  // forward; backward launches it again (x ⊙ U, then dx)
  k.insert(k.end(), {routing(Op::Router), routing(Op::Bins), routing(Op::Permute), routing(Op::Topology),
                     routing(Op::Gather)});
  k.push_back(m.sdd_fwd);
  if (m.shape.gated) k.push_back(routing(Op::Glu));
  k.insert(k.end(), {m.dsd_nn, routing(Op::Scatter)});
  // Backward; recompute first launches Glu again (a plain layer's act(pre) alone) and the DSD.
  if (m.opt.recompute && m.fused_act) k.push_back(routing(Op::Glu));
  k.insert(k.end(), {routing(Op::ScatterGrad), routing(Op::RouterGrad)});
  if (m.fused_act) k.push_back(m.sdd_bwd);
  k.push_back(m.dsd_tn);
  if (m.shape.gated) k.push_back(routing(Op::GluGrad));
  if (m.dsd_nn_dx.scatter) k.push_back(m.dsd_nn_dx);  // dX straight into dx (no backward Scatter)
  return k;
}

double Layer::forward_flops() const {
  const MoeShape& s = impl_->shape;
  return (s.gated ? 3 : 2) * 2.0 * double(s.tokens) * double(s.top_k) * double(s.hidden) * double(s.ffn);
}

double Layer::backward_flops() const { return 2 * forward_flops(); }

LayerContext::LayerContext(const Layer& layer) {
  const Layer::Impl& m = *layer.impl_;
  s_ = std::make_unique<State>(m);
  State& c = *s_;
  c.logits = m.mem(m.plan.logits);
  c.x_perm = m.mem(m.plan.x_perm);
  c.pre = m.mem(m.plan.pre);
  c.gate = m.mem(m.plan.gate);
  c.hidden = m.mem(m.plan.hidden);
  c.y_rows = m.mem(m.plan.y_rows);
  c.jitter_seed = m.mem(m.plan.jitter_seed);
}

LayerContext::~LayerContext() = default;

const float* LayerContext::losses() const { return s_->ws.state().losses; }
const int32_t* LayerContext::expert_ids() const { return s_->ws.state().expert_ids; }
const float* LayerContext::weights() const { return s_->ws.state().weights; }
const int32_t* LayerContext::counts() const { return s_->ws.state().counts; }
const uint64_t* LayerContext::jitter_seed() const { return static_cast<const uint64_t*>(s_->jitter_seed.get()); }

size_t LayerContext::bytes() const {
  const State& c = *s_;
  return size_t(c.ws.bytes()) + c.logits.size() + c.x_perm.size() + c.pre.size() + c.gate.size() +
         c.hidden.size() + c.y_rows.size() + c.jitter_seed.size();
}

void Layer::forward(const void* x, const LayerWeights& w, void* y, LayerContext& ctx, Stream stream) {
  Impl& m = *impl_;
  const bool gated = m.shape.gated;
  check_pointer(x, "forward", "x");
  check_pointer(y, "forward", "y");
  check_weights(w, "forward", gated);
  LayerContext::State& c = *ctx.s_;
  if (&c.layer != &m) throw InvalidArgument("Layer::forward: the context was made for another layer");
  m.dev.check_stream(stream);

  m.start(0, stream);
  const void* router_x = x;
  if (m.jitter) {
    // This forward's {seed, offset} from the layer's counter; Jitter advances the counter for the next.
    m.dev.copy_device_to_device(c.jitter_seed.get(), m.jitter_state.get(), 2 * sizeof(uint64_t), stream);
    c.jitter(m.cache, x, nullptr, m.router_x.get(), true, stream);
    router_x = m.router_x.get();
  }
  m.lt.run(m.logits_plan, router_x, w.router, c.logits.get(), stream);
  m.stop(0, stream);
  RouteForward rf;
  rf.logits = static_cast<const float*>(c.logits.get());
  rf.x = x;
  rf.x_permuted = c.x_perm.get();
  rf.lbl_weight = m.opt.lbl_weight;
  rf.z_weight = m.opt.z_weight;
  rf.expert_bias = w.expert_bias;
  m.start(1, stream);
  route_forward(m.cache, c.ws, rf, stream);
  m.stop(1, stream);

  auto product = [&](const KernelSpec& k, const void* a, const void* b, void* out, void* aux = nullptr) {
    c.product(m.cache, k, a, b, out, aux, stream);
  };
  // With recompute, the hidden activation and the expert outputs live in the layer's scratch (backward
  // recomputes them); a plain layer without activation keeps its SDD output, the hidden, as `pre`.
  const bool rc = m.opt.recompute;
  void* hidden = rc ? m.d_sparse.get() : c.hidden.get();
  void* y_rows = rc ? m.rows_scratch.get() : c.y_rows.get();
  m.start(2, stream);
  if (gated) {
    product(m.sdd_plain, c.x_perm.get(), w.w1, c.pre.get());
    product(m.sdd_plain, c.x_perm.get(), w.v1, c.gate.get());
    RoutingArgs a = c.ws.args();
    a.x = c.pre.get();
    a.aux = c.gate.get();
    a.y = hidden;
    launch_routing(m.cache, c.ws.spec(Op::Glu), a, stream);
  } else if (m.fused_act) {
    product(m.sdd_fwd, c.x_perm.get(), w.w1, hidden, c.pre.get());
  } else {
    if (rc) hidden = c.pre.get();
    product(m.sdd_fwd, c.x_perm.get(), w.w1, hidden);
  }
  product(m.dsd_nn, hidden, w.w2, y_rows);
  m.stop(2, stream);
  m.start(3, stream);
  route_combine(m.cache, c.ws, y_rows, y, stream);
  m.stop(3, stream);
  c.x = x;
  c.saved = true;
}

void Layer::backward(const void* dy, const LayerWeights& w, LayerContext& ctx, const LayerGradients& g,
                     Stream stream) {
  Impl& m = *impl_;
  const bool gated = m.shape.gated;
  check_pointer(dy, "backward", "dy");
  check_weights(w, "backward", gated);
  check_pointer(g.dx, "backward", "grads.dx");
  check_pointer(g.drouter, "backward", "grads.drouter");
  check_pointer(g.dw1, "backward", "grads.dw1");
  check_pointer(g.dw2, "backward", "grads.dw2");
  check_pointer(g.dv1, "backward", "grads.dv1", gated);
  LayerContext::State& c = *ctx.s_;
  if (&c.layer != &m) throw InvalidArgument("Layer::backward: the context was made for another layer");
  if (!c.saved)
    throw InvalidArgument("Layer::backward: the context holds no forward pass (none ran, or its backward already did)");
  m.dev.check_stream(stream);

  auto product = [&](const KernelSpec& k, const void* a, const void* b, void* out, void* aux = nullptr) {
    c.product(m.cache, k, a, b, out, aux, stream);
  };

  // The hidden activation h and the expert outputs: saved, or recomputed from the saved pre-activation(s)
  // into the layer's scratch (h into the sparse gradient's buffer, free until dW2 is done).
  const void* hidden = c.hidden.get();
  void* y_rows = c.y_rows.get();
  RoutingArgs a{};
  if (m.opt.recompute) {
    m.start(8, stream);
    y_rows = m.rows_scratch.get();
    if (gated || m.fused_act) {
      a = c.ws.args();
      a.x = c.pre.get();
      a.aux = gated ? c.gate.get() : nullptr;  // null: act(pre) alone
      a.y = m.d_sparse.get();
      launch_routing(m.cache, c.ws.spec(Op::Glu), a, stream);
      hidden = m.d_sparse.get();
    } else {
      hidden = c.pre.get();
    }
    product(m.dsd_nn, hidden, w.w2, y_rows);
    m.stop(8, stream);
  }

  // The expert rows' gradient dy·w (padding rows zero) and the routing weights' gradient dw[t, k].
  m.start(4, stream);
  a = c.ws.args();
  a.x = dy;
  a.y = m.d_rows.get();
  a.aux = y_rows;
  a.dweights = static_cast<float*>(m.dweights.get());
  launch_routing(m.cache, c.ws.spec(Op::ScatterGrad), a, stream);
  a = c.ws.args();
  a.logits = static_cast<const float*>(c.logits.get());
  a.dlogits = nullptr;  // the router GEMMs take the dtype's copy: fp32 dlogits would be written for no reader
  a.dlogits_lp = m.dlogits_lp.get();
  a.dweights = static_cast<float*>(m.dweights.get());
  a.lbl_weight = m.opt.lbl_weight;
  a.z_weight = m.opt.z_weight;
  a.d_lbl = 1.f;
  a.d_z = 1.f;
  launch_routing(m.cache, c.ws.spec(Op::RouterGrad), a, stream);
  m.stop(4, stream);
  m.start(5, stream);

  // dW2 = hᵀ·dy_rows; then dAct = dy_rows·W2ᵀ (with act′ fused for plain layers), over h when recomputed.
  product(m.dsd_tn, hidden, m.d_rows.get(), g.dw2);
  product(m.sdd_bwd, m.d_rows.get(), w.w2, m.d_sparse.get(), m.fused_act ? c.pre.get() : nullptr);
  if (gated) {
    // dA = dAct ⊙ g ⊙ act′(a) over dAct, dG = dAct ⊙ act(a) over g (the saved gate is not needed again).
    a = c.ws.args();
    a.x = m.d_sparse.get();
    a.aux = c.pre.get();
    a.x2 = c.gate.get();
    a.y = m.d_sparse.get();
    a.y2 = c.gate.get();
    launch_routing(m.cache, c.ws.spec(Op::GluGrad), a, stream);
  }
  product(m.dsd_tn, m.d_sparse.get(), c.x_perm.get(), g.dw1);
  if (gated) product(m.dsd_tn, c.gate.get(), c.x_perm.get(), g.dv1);
  // dX rows: dA·W1 (+ dG·V1 into the expert outputs' rows, which ScatterGrad has consumed).
  if (m.dsd_nn_dx.scatter) {
    ProductArgs pa{m.d_sparse.get(), w.w1, g.dx, c.ws.topology(), c.ws.max_block_rows(), nullptr};
    pa.scatter_rows = c.ws.state().row_tokens;
    launch_product(m.cache, m.dsd_nn_dx, pa, stream);
    m.stop(5, stream);
    m.start(6, stream);  // nothing left to scatter: the phase stays (empty) for the profile's layout
    m.stop(6, stream);
  } else {
    product(m.dsd_nn, m.d_sparse.get(), w.w1, m.d_rows.get());
    if (gated) product(m.dsd_nn, c.gate.get(), w.v1, y_rows);
    m.stop(5, stream);
    m.start(6, stream);
    a = c.ws.args();
    a.x = m.d_rows.get();
    a.x2 = gated ? y_rows : nullptr;
    a.y = g.dx;
    a.weighted = 0;
    launch_routing(m.cache, c.ws.spec(Op::Scatter), a, stream);
    m.stop(6, stream);
  }

  // The router: dWr = dlogitsᵀ·x, dx += dlogits·Wr; with jitter dWr = dlogitsᵀ·(x ⊙ U) (x ⊙ U recomputed,
  // the same bits as forward's) and dx += U ⊙ (dlogits·Wr).
  m.start(7, stream);
  if (m.jitter) {
    c.jitter(m.cache, c.x, nullptr, m.router_x.get(), false, stream);
    m.lt.run(m.drouter_plan, m.dlogits_lp.get(), m.router_x.get(), g.drouter, stream);
    m.lt.run(m.dx_router_jitter_plan, m.dlogits_lp.get(), w.router, m.router_x.get(), stream);
    c.jitter(m.cache, m.router_x.get(), g.dx, g.dx, false, stream);
  } else {
    m.lt.run(m.drouter_plan, m.dlogits_lp.get(), c.x, g.drouter, stream);
    m.lt.run(m.dx_router_plan, m.dlogits_lp.get(), w.router, g.dx, stream);
  }
  m.stop(7, stream);
  c.saved = false;
}

}  // namespace dmoe

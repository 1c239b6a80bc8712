#include "dmoe/routing.hpp"

#include <fmt/format.h>

namespace dmoe {
namespace {

constexpr int64_t kWarpsPerCta = 8;  // row- and token-parallel kernels: one warp per row or token

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t routing_grid(const KernelSpec& k, const RoutingArgs& a) {
  const int64_t T = a.tokens;
  switch (k.op) {
    case Op::Jitter: return ceil_div(T * k.hidden / 8, 256);  // one 16-byte vector per thread
    case Op::Router:
    case Op::Permute: return route_chunks(T);
    case Op::Bins: return 1;
    case Op::Topology: {
      const int64_t fb = k.ffn / k.block, max_block_rows = a.max_rows / k.block;
      return ceil_div(std::max({max_block_rows * fb, int64_t{k.experts} * fb + 1, max_block_rows + 1}), 256);
    }
    case Op::Gather: return ceil_div(T, kWarpsPerCta) + k.experts;  // tokens, then one CTA per expert's padding
    case Op::ScatterGrad: return ceil_div(a.max_rows, kWarpsPerCta);
    case Op::Scatter:
    case Op::RouterGrad: return ceil_div(T, kWarpsPerCta);
    case Op::Glu:
    case Op::GluGrad: return ceil_div(int64_t{a.max_rows} * k.ffn / 8, 256 * kGluVectors);  // the capacity's vectors
    default: throw InvalidArgument(fmt::format("{} is not a routing kernel", to_string(k.op)));
  }
}

void launch_routing(KernelCache& cache, const KernelSpec& spec, const RoutingArgs& args, Stream stream) {
  if (is_product(spec.op)) throw InvalidArgument(fmt::format("{} is not a routing kernel", kernel_name(spec)));
  if (args.tokens < 0) throw InvalidArgument(fmt::format("tokens must not be negative, got {}", args.tokens));
  if (args.max_rows < 0 || (spec.block > 0 && args.max_rows % spec.block != 0))
    throw InvalidArgument(fmt::format("max_rows = {} is not a non-negative multiple of the block size {}",
                                      args.max_rows, spec.block));
  const int64_t grid = routing_grid(spec, args);
  constexpr int64_t kMaxGrid = (int64_t{1} << 31) - 1;
  if (grid > kMaxGrid)
    throw InvalidArgument(fmt::format("{} needs {} CTAs, over the launch limit {}", kernel_name(spec), grid, kMaxGrid));
  if (grid == 0) return;
  const LoadedFunction& fn = cache.get(spec);
  RoutingArgs copy = args;
  void* params[] = {&copy};
  launch(fn, static_cast<unsigned>(grid), 1, 1, static_cast<unsigned>(threads_per_cta(spec)), params, stream);
}

RoutingWorkspace::RoutingWorkspace(const Device& dev, const MoeShape& shape, int renorm_p)
    : shape_(shape), renorm_p_(renorm_p) {
  validate(shape_);
  if (shape_.tokens <= 0) throw InvalidArgument("RoutingWorkspace needs the token count (MoeShape::tokens > 0)");
  max_rows_ = static_cast<int32_t>(max_padded_rows(shape_));
  const int64_t T = shape_.tokens, K = shape_.top_k, E = shape_.experts, B = shape_.block;
  const int64_t assignments = T * K, chunks = route_chunks(T), fb = shape_.ffn / B;
  const int64_t max_blocks = max_block_rows() * fb;
  auto ints = [&](int64_t n) {
    buffers_.emplace_back(dev, static_cast<size_t>(std::max<int64_t>(n, 1)) * 4);
    bytes_ += std::max<int64_t>(n, 1) * 4;
    return static_cast<int32_t*>(buffers_.back().get());
  };
  auto floats = [&](int64_t n) { return reinterpret_cast<float*>(ints(n)); };
  buffers_.reserve(19);
  state_.expert_ids = ints(assignments);
  state_.weights = floats(assignments);
  state_.rows = ints(assignments);
  state_.indices = ints(assignments);
  state_.bin_ids = ints(assignments);
  state_.chunk_hist = ints(chunks * E);
  state_.chunk_offsets = ints(chunks * E);
  state_.chunk_scores = floats(chunks * E);
  state_.chunk_z = floats(chunks);
  state_.counts = ints(E);
  state_.bins = ints(E);
  state_.padded_bins = ints(E);
  state_.block_rows = ints(1);
  state_.losses = floats(2);
  topo_out_.row_indices = ints(max_blocks);
  topo_out_.column_indices = ints(max_blocks);
  topo_out_.offsets = ints(max_block_rows() + 1);
  topo_out_.column_indices_t = ints(max_blocks);
  topo_out_.offsets_t = ints(E * fb + 1);
  topo_out_.block_offsets_t = ints(max_blocks);
  const Arch arch = device_arch(dev.properties());
  for (size_t i = 0; i < specs_.size(); ++i) specs_[i] = spec(Op(size_t(kFirstRoutingOp) + i), arch);
}

Topology RoutingWorkspace::topology() const {
  return Topology{topo_out_.row_indices, topo_out_.column_indices, topo_out_.offsets, topo_out_.column_indices_t,
                  topo_out_.offsets_t,   topo_out_.block_offsets_t, state_.block_rows};
}

KernelSpec RoutingWorkspace::spec(Op op, Arch arch) const { return routing_spec(shape_, op, arch, renorm_p_); }

const KernelSpec& RoutingWorkspace::spec(Op op) const {
  if (is_product(op)) throw InvalidArgument(fmt::format("{} is not a routing kernel", to_string(op)));
  return specs_[size_t(op) - size_t(kFirstRoutingOp)];
}

RoutingArgs RoutingWorkspace::args() const {
  RoutingArgs a{};
  a.s = state_;
  a.topo = topo_out_;
  a.tokens = static_cast<int32_t>(shape_.tokens);
  a.max_rows = max_rows_;
  return a;
}

void route_forward(KernelCache& cache, const RoutingWorkspace& ws, const RouteForward& f, Stream stream) {
  if (!f.logits || !f.x || !f.x_permuted) throw InvalidArgument("route_forward: logits, x and x_permuted must not be null");
  RoutingArgs a = ws.args();
  a.logits = f.logits;
  a.x = f.x;
  a.y = f.x_permuted;
  a.lbl_weight = f.lbl_weight;
  a.z_weight = f.z_weight;
  for (Op op : {Op::Router, Op::Bins, Op::Permute, Op::Topology, Op::Gather})
    launch_routing(cache, ws.spec(op), a, stream);
}

void route_combine(KernelCache& cache, const RoutingWorkspace& ws, const void* rows, void* y, Stream stream) {
  if (!rows || !y) throw InvalidArgument("route_combine: rows and y must not be null");
  RoutingArgs a = ws.args();
  a.x = rows;
  a.y = y;
  a.weighted = 1;
  launch_routing(cache, ws.spec(Op::Scatter), a, stream);
}

}  // namespace dmoe

#include "dmoe/routing.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace dmoe {
namespace {

constexpr int64_t kWarpsPerCta = 8;  // row- and token-parallel kernels: one warp per row or token

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t routing_grid(const KernelSpec& k, const RoutingArgs& a) {
  const int64_t T = a.tokens;
  switch (k.op) {
    case Op::Jitter: return ceil_div(T * k.hidden / 8, 256 * kJitterVectors);  // 16-byte vectors per thread
    case Op::Router:
    case Op::Permute: return route_chunks(T);
    case Op::Bins: return 1;
    case Op::Topology: {
      const int64_t fb = k.ffn / k.block, max_block_rows = a.max_rows / k.block;
      return ceil_div(std::max({max_block_rows * fb, int64_t{k.experts} * fb + 1, max_block_rows + 1}), 256);
    }
    case Op::Gather:  // tokens (none when y is null: the rows map only), then one CTA per expert's padding
      return (a.y ? ceil_div(T, kWarpsPerCta) : 0) + k.experts;
    case Op::ScatterGrad: return ceil_div(T * k.top_k, kWarpsPerCta) + k.experts;  // assignments, then padding
    case Op::Scatter: return ceil_div(T, kWarpsPerCta);
    case Op::RouterGrad: return ceil_div(T, router_grad_tokens_per_cta(k.experts, k.top_k));
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

namespace {

// The workspace's arrays in allocation order, in 4-byte elements (at least one each), for one shape; each
// starts on a 256-byte boundary of the one allocation.
struct WorkspaceLayout {
  static constexpr int kArrays = 21;
  int64_t offset[kArrays] = {}, total = 0;
  explicit WorkspaceLayout(const MoeShape& s) {
    const int64_t T = s.tokens, K = s.top_k, E = s.experts, B = s.block;
    const int64_t assignments = T * K, chunks = route_chunks(T), fb = s.ffn / B;
    const int64_t block_rows = max_padded_rows(s) / B, max_blocks = block_rows * fb;
    const int64_t elems[kArrays] = {assignments, assignments, assignments, assignments, assignments,
                                    chunks * E,  chunks * E,  chunks * E,  chunks,      E,
                                    E,           E,           1,           2,           max_blocks,
                                    max_blocks,  block_rows + 1, max_blocks, E * fb + 1, max_blocks,
                                    block_rows * B};
    for (int i = 0; i < kArrays; ++i) {
      offset[i] = total;
      total += (std::max<int64_t>(elems[i], 1) * 4 + 255) / 256 * 256;
    }
  }
};

}  // namespace

int64_t RoutingWorkspace::planned_bytes(const MoeShape& shape) {
  validate(shape);
  if (shape.tokens <= 0) throw InvalidArgument("RoutingWorkspace needs the token count (MoeShape::tokens > 0)");
  return WorkspaceLayout(shape).total;
}

RoutingWorkspace::RoutingWorkspace(const Device& dev, const MoeShape& shape, int renorm_p, const Allocator& alloc)
    : shape_(shape), renorm_p_(renorm_p) {
  bytes_ = planned_bytes(shape_);
  max_rows_ = static_cast<int32_t>(max_padded_rows(shape_));
  const WorkspaceLayout layout(shape_);
  memory_ = DeviceBuffer(dev, size_t(bytes_), alloc);
  int next = 0;
  auto ints = [&] { return reinterpret_cast<int32_t*>(static_cast<char*>(memory_.get()) + layout.offset[next++]); };
  auto floats = [&] { return reinterpret_cast<float*>(ints()); };
  state_.expert_ids = ints();
  state_.weights = floats();
  state_.rows = ints();
  state_.indices = ints();
  state_.bin_ids = ints();
  state_.chunk_hist = ints();
  state_.chunk_offsets = ints();
  state_.chunk_scores = floats();
  state_.chunk_z = floats();
  state_.counts = ints();
  state_.bins = ints();
  state_.padded_bins = ints();
  state_.block_rows = ints();
  state_.losses = floats();
  topo_out_.row_indices = ints();
  topo_out_.column_indices = ints();
  topo_out_.offsets = ints();
  topo_out_.column_indices_t = ints();
  topo_out_.offsets_t = ints();
  topo_out_.block_offsets_t = ints();
  state_.row_tokens = ints();
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
  if (!f.logits || !f.x) throw InvalidArgument("route_forward: logits and x must not be null");
  RoutingArgs a = ws.args();
  a.logits = f.logits;
  a.x = f.x;
  a.y = f.x_permuted;
  a.lbl_weight = f.lbl_weight;
  a.z_weight = f.z_weight;
  a.expert_bias = f.expert_bias;
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

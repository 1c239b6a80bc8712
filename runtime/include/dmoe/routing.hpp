// dmoe/routing.hpp — launching the routing chain: jitter, router, bins, permutation, topology, gather,
// scatter and their backward passes. No launch reads a device value on the host.
#pragma once

#include <array>

#include "dmoe/kernel_cache.hpp"
#include "dmoe/routing_args.cuh"

namespace dmoe {

// CTAs a routing kernel launches for args.tokens tokens and args.max_rows padded rows of capacity.
// The kernels' work mapping (what each CTA does) is documented in templates/dmoe/kernels/*.cuh.
int64_t routing_grid(const KernelSpec&, const RoutingArgs&);

// Launches one routing kernel. Throws InvalidArgument for a non-routing spec, tokens < 0 or a capacity
// that is not a multiple of the block; CudaError for driver failures. A hit does no allocation or
// formatting.
void launch_routing(KernelCache&, const KernelSpec&, const RoutingArgs&, Stream);

// Device buffers for one routing pass of up to `tokens` tokens, sized from upper bounds, and the kernel
// specs of the chain. Owned: one allocation (from `alloc` when given), every array 256-byte aligned in it;
// the RoutingState / TopologyOut views point into it.
class RoutingWorkspace {
 public:
  RoutingWorkspace(const Device&, const MoeShape&, int renorm_p = 0, const Allocator& alloc = {});
  // The bytes a workspace of this shape allocates (no GPU needed); bytes() of a constructed one.
  static int64_t planned_bytes(const MoeShape&);
  const MoeShape& shape() const { return shape_; }
  int32_t max_rows() const { return max_rows_; }              // padded-row capacity (multiple of B)
  int32_t max_block_rows() const { return max_rows_ / int32_t(shape_.block); }
  const RoutingState& state() const { return state_; }
  const TopologyOut& topology_out() const { return topo_out_; }
  Topology topology() const;                                   // read-only view for the products
  int64_t bytes() const { return bytes_; }

  // The specs of the chain's kernels for this shape on arch, every routing op (Op::Jitter … Op::GluGrad;
  // Glu and GluGrad with the shape's activation, RouterGrad with its dtype).
  KernelSpec spec(Op, Arch) const;
  // The same for the workspace's own device, built and validated once at construction (the launch path).
  const KernelSpec& spec(Op) const;

  // The arguments every kernel of the chain shares: state, topology, sizes. Callers fill the rest.
  RoutingArgs args() const;

 private:
  MoeShape shape_;
  int renorm_p_;
  int32_t max_rows_ = 0;
  int64_t bytes_ = 0;
  std::array<KernelSpec, size_t(kLastOp) - size_t(kFirstRoutingOp) + 1> specs_{};
  DeviceBuffer memory_;
  RoutingState state_{};
  TopologyOut topo_out_{};
};

// The forward routing chain on one stream, host-synchronization free: Router → Bins → Permute →
// Topology → Gather. Inputs: router logits [T, E] (fp32) and tokens x [T, H]; output: x_permuted
// [max_rows, H] in expert order (padding rows zero), with the routing state and topology in `ws`. With
// x_permuted null the rows are not moved: Gather only completes the rows map (RoutingState::row_tokens)
// that a gathering SDD (KernelSpec::gather) reads x through.
struct RouteForward {
  const float* logits = nullptr;
  const void* x = nullptr;
  void* x_permuted = nullptr;
  float lbl_weight = 0.01f;
  float z_weight = 0.001f;
  const float* expert_bias = nullptr;  // [E] fp32 (optional): added to the scores for the top-k selection only
};
void route_forward(KernelCache&, const RoutingWorkspace&, const RouteForward&, Stream);

// The way back: y[t] = Σ_k weights[t·K + k] · rows[row(t, k)] (the padded scatter).
void route_combine(KernelCache&, const RoutingWorkspace&, const void* rows, void* y, Stream);

}  // namespace dmoe

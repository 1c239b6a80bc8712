// dmoe/layer.hpp — the dropless MoE layer on the GPU: forward and backward as a fixed sequence of
// dmoe's JIT kernels and three small cuBLASLt GEMMs (the router), with no host synchronization.
//
//   forward:  logits = x·Wrᵀ → router, bins, permutation, topology → padded gather → SDD x·W1ᵀ with the
//             activation fused (gated: two SDDs and the GLU product) → DSD act·W2 → weighted scatter.
//   backward: scatter's gradient (and dw) → router gradient → SDD dy·W2ᵀ with the activation gradient
//             fused (gated: the GLU gradient) → DSD TN for dW2, dW1 (dV1) → DSD NN for dX → gather's
//             gradient (top-k 1, not gated, sm_90a: fused, the DSD writes dx's rows through the rows
//             map) → dWr = dlogitsᵀ·x and dx += dlogits·Wr.
//
// Semantics, layouts and oracles: dmoe-semantics.md (MegaBlocks' layout: w1, w2, v1 are [E·F, H], the
// router weight is [E, H]). Every tensor is a caller-owned device pointer in the shape's dtype, 16-byte
// aligned, except what the layer owns (the saved activations in a LayerContext and the backward scratch).
//
// Ordering: the calls of one Layer share its backward scratch and its cuBLASLt workspace, so they must be
// ordered: one stream, or the caller's own synchronization between streams. Nothing is read back on the
// host, so forward and backward can be captured in a CUDA graph and replayed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dmoe/driver.hpp"
#include "dmoe/kernel_cache.hpp"
#include "dmoe/spec.hpp"

namespace dmoe {

// Router and memory options; the rest of the layer's description is the MoeShape (H, F, E, K, B, the
// token count T, dtype, activation, gated).
struct LayerOptions {
  int renorm_p = 0;          // renormalize the top-k weights by their p-norm (0: raw softmax weights; 1, 2)
  float lbl_weight = 0.01f;  // load-balancing loss weight
  float z_weight = 0.0f;     // router z-loss weight
  // Memory-saving mode: a context keeps only the permuted input and the pre-activation(s); backward
  // recomputes the hidden activation (act(pre), or the GLU) and the expert outputs (one DSD) that the
  // scatter's weight gradient needs. Saves [T_pad, F] + [T_pad, H] per context ([T_pad, H] for a plain
  // layer without activation) for one more product per backward; the layer keeps one [T_pad, H] scratch.
  bool recompute = false;
  // Router jitter (training): the router's input is x ⊙ U(1 − ε, 1 + ε), fresh noise every forward (also
  // when replayed in a CUDA graph: the key is read from device memory, Layer::set_seed); the experts see x.
  // Backward differentiates the jittered step: dWr = dlogitsᵀ·(x ⊙ U), dx gets U ⊙ (dlogits·Wr). 0: off;
  // otherwise in (0, 1).
  float jitter_eps = 0.0f;
};

// Throws InvalidArgument, naming the value, for a shape a layer cannot have (validate(MoeShape), and a
// positive token count) or options out of range. Needs no GPU: Layer's constructor starts with it.
void validate(const MoeShape&, const LayerOptions&);

// Every device buffer of a layer and of one of its contexts, in bytes (0: not allocated), for a shape and
// options: what Layer::bytes() and LayerContext::bytes() report, computed without a GPU. Each buffer is one
// allocation, through the layer's Allocator when it has one (dmoe/driver.hpp), else cuMemAlloc; taken when
// the Layer or LayerContext is constructed and given back when it is destroyed: forward and backward
// allocate nothing. (The driver's own memory for loaded kernels and cuBLASLt's handle is not included.)
struct LayerMemoryPlan {
  // The layer's, shared by its contexts: backward scratch and cuBLASLt's workspace.
  size_t rows_grad = 0;           // [T_pad max, H]: the expert rows' gradient (dy's rows, then dx's)
  size_t sparse_grad = 0;         // [T_pad max, F]: the hidden activation's gradient
  size_t dlogits_lp = 0;          // [T, E] in the dtype (cuBLASLt's operand)
  size_t dweights = 0;            // [T·K] fp32: the routing weights' gradient
  size_t rows_scratch = 0;        // recompute: [T_pad max, H], the expert outputs (forward and backward)
  size_t router_input = 0;        // jitter: [T, H], x ⊙ U (forward, backward), then U ⊙ (dlogits·Wr)
  size_t jitter_state = 0;        // jitter: {base seed, next forward's offset}, 2 × uint64
  size_t cublaslt_workspace = 0;  // CublasLt::kWorkspaceBytes
  // One context's: what a forward saves for its backward.
  size_t routing = 0;             // RoutingWorkspace::planned_bytes: ids, weights, permutation, topology
  size_t logits = 0;              // [T, E] fp32
  size_t x_perm = 0;              // [T_pad max, H]: the permuted input
  size_t pre = 0;                 // [T_pad max, F]: the pre-activation x·W1ᵀ (with an activation, gated, or
                                  // recompute)
  size_t gate = 0;                // [T_pad max, F]: gated: x·V1ᵀ
  size_t hidden = 0;              // [T_pad max, F]: the hidden activation (not with recompute)
  size_t y_rows = 0;              // [T_pad max, H]: the expert outputs (not with recompute)
  size_t jitter_seed = 0;         // jitter: {base seed, offset} of this context's forward, 2 × uint64

  size_t layer_bytes() const;
  size_t context_bytes() const;
};

// Throws InvalidArgument as validate(MoeShape, LayerOptions) does.
LayerMemoryPlan memory_plan(const MoeShape&, const LayerOptions&);

struct LayerWeights {
  const void* router = nullptr;  // [E, H]
  const void* w1 = nullptr;      // [E·F, H]
  const void* w2 = nullptr;      // [E·F, H]
  const void* v1 = nullptr;      // [E·F, H], gated layers only (must be null otherwise)
  // [E] fp32, optional (null: none): DeepSeek-V3's auxiliary-loss-free balancing bias, added to the router's
  // softmax scores for the top-k selection only; the routing weights are the unbiased scores and no
  // gradient reaches it (the caller updates it, e.g. from LayerContext::counts()). Read by forward only.
  const float* expert_bias = nullptr;
};

struct LayerGradients {
  void* dx = nullptr;       // [T, H]
  void* drouter = nullptr;  // [E, H]
  void* dw1 = nullptr;      // [E·F, H]
  void* dw2 = nullptr;      // [E·F, H]
  void* dv1 = nullptr;      // [E·F, H], gated layers only
};

class Layer;

// Time per phase of the last profiled forward and backward (Layer::set_profiling), in milliseconds.
struct LayerProfile {
  double router_gemm = 0;   // forward: logits = x·Wrᵀ
  double routing = 0;       // forward: router, bins, permutation, topology, padded gather
  double experts_fwd = 0;   // forward: the SDD(s), GLU and DSD
  double combine = 0;       // forward: the weighted scatter
  double routing_bwd = 0;   // backward: scatter's gradient and the router's
  double experts_bwd = 0;   // backward: SDD, GLU gradient, DSD TN and NN
  double gather_bwd = 0;    // backward: gather's gradient (the unweighted scatter into dx)
  double router_gemm_bwd = 0;  // backward: dWr and dx += dlogits·Wr
  double recompute = 0;     // backward (LayerOptions::recompute): the hidden activation and expert outputs
};

// What one forward pass saves for its backward pass: the routing (ids, weights, permutation, topology),
// the permuted input, the pre-activation (and the gated branch), the hidden activation and the expert
// outputs (the last two not with LayerOptions::recompute), plus a pointer to the caller's x, which must
// stay unchanged until backward. backward uses the
// saved activations as scratch, so it runs once per forward (a second call throws).
class LayerContext {
 public:
  explicit LayerContext(const Layer&);
  ~LayerContext();
  LayerContext(const LayerContext&) = delete;
  LayerContext& operator=(const LayerContext&) = delete;

  // Device pointer to the two (already weighted) router losses of the last forward: [load-balancing, z].
  const float* losses() const;
  // Device pointers to the last forward's routing: expert ids and weights [T·K], counts per expert [E].
  const int32_t* expert_ids() const;
  const float* weights() const;
  const int32_t* counts() const;
  // Jitter: device pointer to the last forward's {base seed, offset} (uint64_t[2]); its noise is
  // jitter_factor(key, element, ε) with key = jitter_key(base, offset) (routing_args.cuh). Null without.
  const uint64_t* jitter_seed() const;
  size_t bytes() const;  // device memory this context holds: memory_plan(...).context_bytes()

 private:
  friend class Layer;
  struct State;
  std::unique_ptr<State> s_;
};

class Layer {
 public:
  // Validates the shape (T = shape.tokens is the token count of every call), loads cuBLASLt, plans the
  // router GEMMs, allocates the backward scratch and cuBLASLt's workspace (through `alloc` when it has
  // functions; a context allocates through its layer's) and compiles every kernel the layer needs in parallel
  // (from the compiler's caches when warm). Throws InvalidArgument for a bad shape or options, NoGpu
  // when cuBLASLt is missing, CompileError, CudaError.
  Layer(const Device&, const MoeShape&, const LayerOptions& = {}, Allocator = {});
  ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  // y [T, H] = the layer applied to x [T, H]; ctx receives what backward needs.
  void forward(const void* x, const LayerWeights&, void* y, LayerContext& ctx, Stream);
  // Gradients of ⟨dy, y⟩ + lbl + z (the losses already carry their weights) for ctx's forward. Every
  // gradient is overwritten, not accumulated.
  void backward(const void* dy, const LayerWeights&, LayerContext& ctx, const LayerGradients&, Stream);

  // Records CUDA events around each phase of forward and backward (a few microseconds per call);
  // profile() waits for the last recorded events and returns the phases' times.
  void set_profiling(bool);
  LayerProfile profile();

  // Jitter: sets the base seed (0 at construction) and restarts the per-forward offset at 0, on the device,
  // synchronously (it waits for the device's pending work first): not during a CUDA graph capture (graphs read both from device memory, so a captured
  // step follows the new seed). Throws InvalidArgument when jitter is off.
  void set_seed(uint64_t seed);

  const MoeShape& shape() const;
  const LayerOptions& options() const;
  const Device& device() const;
  // Device memory the layer itself holds (scratch, cuBLASLt workspace): memory_plan(...).layer_bytes().
  // A step's peak is bytes() plus the bytes() of each live context, plus the caller's tensors.
  size_t bytes() const;
  // Every JIT kernel spec the layer launches, in launch order of forward then backward (for inspection).
  std::vector<KernelSpec> kernels() const;
  // 2·T·K·H·F multiply-adds per expert GEMM: the useful FLOPs of the expert products of one forward
  // (2 products, 3 when gated) and one backward (4, 6 when gated), padding excluded.
  double forward_flops() const;
  double backward_flops() const;

 private:
  friend class LayerContext;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dmoe

// dmoe/spec.hpp — the descriptors: an MoE layer shape and one kernel's specification.
//
// A KernelSpec is a small plain struct. It is the in-memory cache key (hashable, comparable), the
// autotuner's search point, and the source of the kernel's canonical name. Everything that changes the
// generated code is a field here; nothing else is.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace dmoe {

// Bad user input: the message names the value and the limit it broke.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The block-sparse products, then the routing chain's kernels and the gated experts' elementwise kernels,
// which share the routing kernels' ABI (templates/dmoe/routing_args.cuh).
enum class Op : uint8_t {
  SDD, DSD, DDS,
  Jitter,       // x · U(1 − ε, 1 + ε), the router input's noise (and its backward)
  Router,       // logits → softmax, top-k, weights, per-chunk histogram and loss partials
  Bins,         // counts, bins, padded_bins, block_rows, chunk prefixes, losses (one CTA)
  Permute,      // stable sort of the assignments by expert: indices, bin_ids, rows
  Topology,     // padded_bins → blocked CSR + COO with transpose metadata, closed form
  Gather,       // x → rows in expert order, padding rows zero
  Scatter,      // expert rows → y[t] = Σ_k w[t,k] · out[row(t,k)] (or unweighted: gather's backward)
  ScatterGrad,  // dy → gradient of the expert rows (padding zero) and dw[t,k]
  RouterGrad,   // dw, losses → gradient of the logits (fp32, and optionally in the layer's dtype)
  Glu,          // on the sparse data: h = act(a) ⊙ g (gated experts' forward)
  GluGrad,      // on the sparse data: da = dh ⊙ g ⊙ act'(a), dg = dh ⊙ act(a)
};
constexpr Op kFirstRoutingOp = Op::Jitter, kLastOp = Op::GluGrad;
bool is_product(Op);
enum class DType : uint8_t { BF16, FP16 };
enum class Arch : uint8_t { SM80, SM86, SM89, SM90a };
enum class Activation : uint8_t { None, GeluTanh, Silu, Relu };
// What an SDD does to its fp32 accumulator before the store (the layer's fused activation):
//   GeluTanh, Silu, Relu:            C = act(acc); with ProductArgs::aux set, aux = acc as well (the
//                                    pre-activation the backward pass needs)
//   GeluTanhGrad, SiluGrad, ReluGrad: C = acc ⊙ act'(aux), aux = the saved pre-activation (required)
// aux has C's layout (the sparse data [blocks, B, B]).
enum class Epilogue : uint8_t { None, GeluTanh, Silu, Relu, GeluTanhGrad, SiluGrad, ReluGrad };
bool is_gradient(Epilogue);
Epilogue parse_epilogue(std::string_view);
// The forward epilogue of an activation and its gradient's (None → Epilogue::None for both).
Epilogue epilogue_of(Activation);
Epilogue gradient_epilogue_of(Activation);

std::string_view to_string(Op);
std::string_view to_string(DType);
std::string_view to_string(Arch);
std::string_view to_string(Activation);
std::string_view to_string(Epilogue);
// Parsers accept the spellings printed by to_string (case-insensitive) and throw InvalidArgument
// naming the bad value and the accepted ones.
Op parse_op(std::string_view);
DType parse_dtype(std::string_view);
Arch parse_arch(std::string_view);
Activation parse_activation(std::string_view);
// "nt" → {false, true}: the first letter is operand A, the second operand B.
std::pair<bool, bool> parse_trans(std::string_view);
int arch_number(Arch);  // 80, 86, 89, 90

// The shape of one dMoE layer. `tokens` is only an upper bound used to size buffers and check that
// every derived index fits in 32 bits; the true routing is only known on the device.
struct MoeShape {
  int64_t hidden = 0;   // H
  int64_t ffn = 0;      // F, per expert
  int64_t experts = 0;  // E
  int64_t top_k = 1;    // K
  int64_t block = 128;  // B, the block-sparse block size
  int64_t tokens = 0;   // T (0: not given; only per-kernel limits are checked)
  DType dtype = DType::BF16;
  Activation activation = Activation::GeluTanh;
  bool gated = false;   // GLU / SwiGLU experts (a third weight v1)
};

// Throws InvalidArgument for non-positive sizes, top_k > experts, ffn not a multiple of block,
// hidden not a multiple of 64, unsupported block sizes, and any derived size or index that does not
// fit in int32 (E·F, padded rows T·K + E·(B−1), the number of blocks).
void validate(const MoeShape&);

// Upper bound on the padded row count: T·K + E·(B − 1), rounded up to a multiple of B.
int64_t max_padded_rows(const MoeShape&);

// Which kernel family computes a product: the portable SIMT reference kernel (every arch), Hopper's
// warp-specialized TMA + wgmma kernel (sm_90a only), or the Ampere-class mma.sync kernel (ldmatrix,
// multi-stage cp.async ring; every arch, sm_90a included).
enum class Mma : uint8_t { Simt, Wgmma, MmaSync };
std::string_view to_string(Mma);
Mma parse_mma(std::string_view);

// The tile a CTA computes: an m×n output tile, stepping k along the reduction.
//   Simt:  `warps` warps; stages must be 1.
//   Wgmma: k = 64, warps = 12 (a producer warpgroup and two consumer warpgroups: m = 128 puts them on top
//          of each other, m = 64 side by side), `stages` shared-memory stages in the TMA ring.
//   MmaSync: m, n in {64, 128}, k in {32, 64}, 4 or 8 warps (2 along m, warps / 2 along n), 2 to 5
//          `stages` in the cp.async ring.
// `group` is the wgmma scheduler's tile order: tiles are taken in groups of `group` outer indices (block
// rows or columns), the outer index fastest, for L2 reuse; 1 is plain outer-major order. One of 1, 2, 4,
// 8, 16 for Wgmma; the other families have no such order and keep the default.
// `pingpong` (Wgmma only) is the consumers' schedule: false, cooperative, the two consumer warpgroups
// share each m×n tile; true, ping-pong, each consumer owns whole m×n tiles (m = 128: two m64 wgmma rows;
// at most 192 accumulators per thread, m·n ≤ 24576, 128 for the gated SDD) and one's epilogue overlaps the
// other's main loop. Wgmma n is 64, 128, 192 or 256 per consumer warpgroup; an SDD tile lies within one
// expert's ffn columns and may cross block boundaries.
struct TileConfig {
  static constexpr uint8_t kDefaultGroup = 8;
  uint16_t m = 64, n = 64, k = 32;
  uint8_t warps = 8;
  uint8_t stages = 1;
  Mma mma = Mma::Simt;
  uint8_t group = kDefaultGroup;
  bool pingpong = false;
  // wgmma: CTAs per cluster (1 or 2). A cluster of 2 takes two adjacent column tiles of the same rows and
  // reduction; one CTA loads their shared A tile once and multicasts it to both (named c2).
  uint8_t cluster = 1;
  // wgmma, plain or forward activation epilogue, either schedule: 0 stages the whole output tile in
  // shared memory before storing it; N > 0 has each consumer warpgroup stage its rows in 64×64 chunks
  // through N rotating buffers, each stored as soon as it is staged (named st{N}; a kept pre-activation
  // goes out chunk by chunk beside the activation). The shared memory freed buys pipeline stages
  // (cooperative 128×256: 4 instead of 3; ping-pong 128×192: 5 instead of 3).
  uint8_t store_chunks = 0;
  // wgmma, cooperative, activation SDD (forward, gradient or gated; not gathering) with whole-tile
  // staging: the consumers stage the raw tile and go on to their next main loop; the producer warpgroup's
  // three idle warps finish the epilogue and store the output (named aw). The default of the ungated ones. The
  // forward output is then act() of the 16-bit pre-activation the backward pass reads, and the gradient
  // g · act'(pre) of g rounded to 16 bits, not of the fp32 accumulator.
  bool act_warps = false;
  friend bool operator==(const TileConfig&, const TileConfig&) = default;
};

// The Hopper tile with the most pipeline stages that fit the shared memory an sm_90 CTA may use.
// `gated`: a gated SDD's stages (two B operands each).
TileConfig wgmma_tile(int m, int n, bool pingpong = false, bool gated = false, int store_chunks = 0);

// The Ampere-class tile m×n×k over 8 warps with the most pipeline stages (at most 5) that fit the
// shared memory a CTA may use on this arch (99 KiB on sm_86 / sm_89, 163 KiB on sm_80, 227 KiB on sm_90a).
TileConfig mma_sync_tile(int m, int n, Arch, int k = 32);

// The most dynamic shared memory one CTA may use on this arch.
int max_shared_bytes(Arch);

// One kernel. The sparse operand is always the MoE topology of [T_pad, E·F] with B×B blocks; T_pad is
// the only size not fixed at compile time (it is read on the device at run time).
//
//   SDD: S[T_pad, E·F]  = op(A) · op(B)    A: [T_pad, H] (N) or [H, T_pad] (T); B: [H, E·F] (N) or [E·F, H] (T)
//   DSD: C              = op(S) · op(B)    op(S) = S: C [T_pad, H], B: [E·F, H] (N) or [H, E·F] (T)
//                                           op(S) = Sᵀ: C [E·F, H], B: [T_pad, H] (N) or [H, T_pad] (T)
//   DDS: C              = op(A) · op(S)    op(S) = S: C [H, E·F], A: [H, T_pad] (N) or [T_pad, H] (T)
//                                           op(S) = Sᵀ: C [H, T_pad], A: [H, E·F] (N) or [E·F, H] (T)
// For DSD trans_a means op(S) = Sᵀ; for DDS trans_b does.
struct KernelSpec {
  Op op = Op::SDD;
  bool trans_a = false;
  bool trans_b = true;
  DType dtype = DType::BF16;
  Arch arch = Arch::SM90a;
  Epilogue epilogue = Epilogue::None;  // SDD: the fused epilogue; Glu, GluGrad: the activation, as its
                                       // forward epilogue (None, GeluTanh, Silu, Relu)
  int32_t block = 128;
  int32_t hidden = 0;
  int32_t ffn = 0;
  int32_t experts = 0;
  TileConfig tile{};
  int32_t top_k = 0;     // routing kernels only (0 for products)
  uint8_t renorm_p = 0;  // Router/RouterGrad: renormalize the top-k weights by their p-norm (0: off)
  // SDD NN/NT on the wgmma kernel only: A's rows are gathered as the kernel loads them, row r of A being
  // row ProductArgs::gather_rows[r] of the [tokens, H] matrix ProductArgs::a (zeros where it is −1): the
  // padded gather fused into the first product, so the permuted input need not be written. Measured
  // 2–22 % slower on the H200 than the plain SDD (cp.async row loads instead of one TMA box), more than
  // the gather kernel it saves, so the layer does not use it (bench/NOTES.md, "product v7"; a {64, 1}
  // TMA box per row measured 1.3–2.9× slower still, v15).
  bool gather = false;
  // SDD with a forward epilogue (None, GeluTanh, Silu, Relu) on the wgmma kernel only: the gated experts'
  // first layer in one product. B2 = ProductArgs::b2 (the gate's weights V1, B's layout) is multiplied
  // beside B; C receives h = act(A·op(B)) ⊙ (A·op(B2)), ProductArgs::aux (optional) A·op(B) and
  // ProductArgs::aux2 (optional) A·op(B2). Twice the accumulators: m·n per consumer warpgroup halves.
  bool gated = false;
  // DSD NN (S · B, row-major B) on the wgmma kernel only: output row r goes to row
  // ProductArgs::scatter_rows[r] of C = [tokens, H] (nothing where it is −1) instead of row r of a
  // [T_pad, H] C: the unweighted padded scatter (gather's backward, top-k 1) fused into the layer's dX
  // product. The map must not repeat a token (two rows would race for it).
  bool scatter = false;
  friend bool operator==(const KernelSpec&, const KernelSpec&) = default;
};

// Throws InvalidArgument naming the field, its value and the limit. A routing spec must leave the fields
// its op does not use at their zero defaults (one kernel, one spec).
void validate(const KernelSpec&);

// The spec of one routing kernel for a layer shape: only the fields the op uses are set (the dtype of
// the kernels that move activations, RouterGrad included; Glu's and GluGrad's activation from
// shape.activation). renorm_p: 0 (raw softmax weights), 1 or 2.
KernelSpec routing_spec(const MoeShape&, Op, Arch, int renorm_p = 0);

// Canonical, readable, unique name, used as the extern "C" entry point and in the cache's metadata:
//   dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_t64x64x32w8s1_sm90a      (SIMT)
//   dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a     (wgmma)
//   dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3g4_sm90a   (wgmma, group 4; g only when not 8)
//   dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma128x128x32w8s5_sm80   (mma.sync)
//   dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5pp_gelu_gather_sm90a (A gathered, gelu fused)
std::string kernel_name(const KernelSpec&);
// A product spec with its tile left out: what a tuned tile applies to, e.g.
// "sdd_nt_bf16_b128_h1024_f4096_e64_sm90a" (kernel_name without "dmoe_" and the tile). The gather flag is
// left out too: a gathering SDD takes the tile tuned for the same SDD over the permuted rows.
std::string tuning_problem(const KernelSpec&);

// Threads per CTA and dynamic shared memory the kernel is launched with.
int threads_per_cta(const KernelSpec&);
int dynamic_shared_bytes(const KernelSpec&);
// Whether the kernel is launched as a programmatic dependent (Hopper's PDL): the routing kernels on sm_90a,
// whose µs-scale launches are a large part of their time. Such a kernel first waits for the previous
// kernel's writes, then lets the stream's next kernel start its CTAs (the first two statements of its
// entry), so the next launch overlaps this kernel's body; one kernel ahead at a time (triggering before
// the wait launched a whole chain at once and measured slower than plain launches).
bool programmatic_launch(const KernelSpec&);

// The default spec for one product of a layer of this shape on this arch: the wgmma kernel on sm_90a
// (128-row tiles, 256 columns where the shape allows), the mma.sync kernel on sm_80 / sm_86 / sm_89
// (128×128×32 over 8 warps where the shape allows), the SIMT kernel where no tile fits. `epilogue`: SDD's
// fused epilogue; on sm_90a the forward activation SDD below hidden 2048 and its gradient up to 2048 take
// the ping-pong schedule (128×128), whose epilogue overlaps the other consumer's main loop (bench/NOTES.md,
// "product v6" and session 18); the cooperative ungated ones hand their epilogue to the activation warps
// (TileConfig::act_warps).
// `gated`: the gated SDD (KernelSpec::gated; SDD with a forward epilogue, sm_90a only: throws otherwise).
KernelSpec default_spec(const MoeShape&, Op, bool trans_a, bool trans_b, Arch, Epilogue epilogue = Epilogue::None,
                        bool gated = false);

// The default wgmma tile of one consumer schedule for k's product (its op, layout, block and shape; the
// tile and arch fields are ignored): the first that validates, or none when no wgmma tile fits.
std::optional<TileConfig> default_wgmma_tile(const KernelSpec& k, bool pingpong);

// The most pipeline stages (2 to 8) k's wgmma tile fits in the shared memory an sm_90 CTA may use, every
// buffer of its other fields counted (the activation warps' second buffer included); 2 where even 2 do not
// fit, which validate() then refuses by its shared memory.
int wgmma_stages(const KernelSpec& k);
// k with tile t if that spec validates, else k unchanged: a tile chosen for a product (a tuning record, a
// benchmark's override) that a variant of it may refuse.
KernelSpec with_tile_if_valid(const KernelSpec& k, const TileConfig& t);
// k reading A's rows through a row map (KernelSpec::gather): its producer warpgroup loads A with all its
// warps, so the activation warps (a default of cooperative activation SDDs) are off.
KernelSpec with_gather(KernelSpec k);

// Every distinct product kernel one layer's forward and backward passes launch, in launch order: SDD NT
// (the activation fused in a plain layer that has one), DSD NN, the backward SDD NT with the activation's
// gradient fused (plain layers with an activation only; otherwise the forward SDD serves), DSD TN.
std::vector<KernelSpec> layer_kernels(const MoeShape&, Arch);

// Named model shapes (mb-46m, mb-356m, mixtral-8x7b, fine-grained, deepseek-v3, tiny).
struct Preset {
  std::string_view name;
  MoeShape shape;
};
const std::vector<Preset>& presets();
// Throws InvalidArgument listing the known names.
const MoeShape& preset(std::string_view name);

struct KernelSpecHash {
  size_t operator()(const KernelSpec&) const noexcept;
};

}  // namespace dmoe

template <>
struct std::hash<dmoe::KernelSpec> : dmoe::KernelSpecHash {};

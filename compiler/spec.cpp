#include "dmoe/spec.hpp"

#include "dmoe/args.cuh"
#include "dmoe/routing_args.cuh"

#include <fmt/format.h>

#include <span>

#include <algorithm>
#include <array>
#include <cctype>
#include <limits>

namespace dmoe {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

template <typename Enum, size_t N>
Enum parse_enum(std::string_view what, std::string_view text, const std::array<Enum, N>& values) {
  const std::string t = lower(text);
  std::string accepted;
  for (Enum v : values) {
    if (t == to_string(v)) return v;
    accepted += fmt::format("{}{}", accepted.empty() ? "" : "|", to_string(v));
  }
  throw InvalidArgument(fmt::format("unknown {} '{}' (expected {})", what, text, accepted));
}

void require_positive(std::string_view what, int64_t v) {
  if (v <= 0) throw InvalidArgument(fmt::format("{} must be positive, got {}", what, v));
}

void require_int32(std::string_view what, int64_t v) {
  if (v > kInt32Max)
    throw InvalidArgument(fmt::format("{} = {} overflows the 32-bit index limit {}", what, v, kInt32Max));
}

void require_block(int64_t block) {
  if (block != 64 && block != 128 && block != 256)
    throw InvalidArgument(fmt::format("block size {} is not supported (expected 64, 128 or 256)", block));
}

}  // namespace

std::string_view to_string(Op op) {
  switch (op) {
    case Op::SDD: return "sdd";
    case Op::DSD: return "dsd";
    case Op::DDS: return "dds";
    case Op::Jitter: return "jitter";
    case Op::Router: return "router";
    case Op::Bins: return "bins";
    case Op::Permute: return "permute";
    case Op::Topology: return "topology";
    case Op::Gather: return "gather";
    case Op::Scatter: return "scatter";
    case Op::ScatterGrad: return "scatter_grad";
    case Op::RouterGrad: return "router_grad";
    case Op::Glu: return "glu";
    case Op::GluGrad: return "glu_grad";
  }
  return "?";
}

bool is_product(Op op) { return op == Op::SDD || op == Op::DSD || op == Op::DDS; }
bool programmatic_launch(const KernelSpec& k) { return !is_product(k.op) && k.arch == Arch::SM90a; }
std::string_view to_string(DType t) { return t == DType::BF16 ? "bf16" : "fp16"; }
std::string_view to_string(Arch a) {
  switch (a) {
    case Arch::SM80: return "sm_80";
    case Arch::SM86: return "sm_86";
    case Arch::SM89: return "sm_89";
    case Arch::SM90a: return "sm_90a";
  }
  return "?";
}
std::string_view to_string(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::GeluTanh: return "gelu";
    case Activation::Silu: return "silu";
    case Activation::Relu: return "relu";
  }
  return "?";
}
std::string_view to_string(Epilogue e) {
  switch (e) {
    case Epilogue::None: return "none";
    case Epilogue::GeluTanh: return "gelu";
    case Epilogue::Silu: return "silu";
    case Epilogue::Relu: return "relu";
    case Epilogue::GeluTanhGrad: return "dgelu";
    case Epilogue::SiluGrad: return "dsilu";
    case Epilogue::ReluGrad: return "drelu";
  }
  return "?";
}
bool is_gradient(Epilogue e) {
  return e == Epilogue::GeluTanhGrad || e == Epilogue::SiluGrad || e == Epilogue::ReluGrad;
}
Epilogue epilogue_of(Activation a) {
  switch (a) {
    case Activation::GeluTanh: return Epilogue::GeluTanh;
    case Activation::Silu: return Epilogue::Silu;
    case Activation::Relu: return Epilogue::Relu;
    case Activation::None: return Epilogue::None;
  }
  return Epilogue::None;
}
Epilogue gradient_epilogue_of(Activation a) {
  switch (a) {
    case Activation::GeluTanh: return Epilogue::GeluTanhGrad;
    case Activation::Silu: return Epilogue::SiluGrad;
    case Activation::Relu: return Epilogue::ReluGrad;
    case Activation::None: return Epilogue::None;
  }
  return Epilogue::None;
}
Epilogue parse_epilogue(std::string_view s) {
  return parse_enum("epilogue", s,
                    std::array{Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu,
                               Epilogue::GeluTanhGrad, Epilogue::SiluGrad, Epilogue::ReluGrad});
}

Op parse_op(std::string_view s) {
  return parse_enum("op", s,
                    std::array{Op::SDD, Op::DSD, Op::DDS, Op::Jitter, Op::Router, Op::Bins, Op::Permute,
                               Op::Topology, Op::Gather, Op::Scatter, Op::ScatterGrad, Op::RouterGrad, Op::Glu,
                               Op::GluGrad});
}
DType parse_dtype(std::string_view s) { return parse_enum("dtype", s, std::array{DType::BF16, DType::FP16}); }
Arch parse_arch(std::string_view s) {
  return parse_enum("arch", s, std::array{Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90a});
}
Activation parse_activation(std::string_view s) {
  return parse_enum("activation", s,
                    std::array{Activation::None, Activation::GeluTanh, Activation::Silu, Activation::Relu});
}
std::pair<bool, bool> parse_trans(std::string_view s) {
  const std::string t = lower(s);
  if (t.size() == 2 && (t[0] == 'n' || t[0] == 't') && (t[1] == 'n' || t[1] == 't'))
    return {t[0] == 't', t[1] == 't'};
  throw InvalidArgument(fmt::format("unknown transpose '{}' (expected nn|nt|tn|tt)", s));
}
int arch_number(Arch a) {
  switch (a) {
    case Arch::SM80: return 80;
    case Arch::SM86: return 86;
    case Arch::SM89: return 89;
    case Arch::SM90a: return 90;
  }
  return 0;
}

int64_t max_padded_rows(const MoeShape& s) {
  const int64_t rows = s.tokens * s.top_k + s.experts * (s.block - 1);
  return (rows + s.block - 1) / s.block * s.block;
}

void validate(const MoeShape& s) {
  require_positive("hidden", s.hidden);
  require_positive("ffn", s.ffn);
  require_positive("experts", s.experts);
  require_positive("top_k", s.top_k);
  if (s.tokens < 0) throw InvalidArgument(fmt::format("tokens must not be negative, got {}", s.tokens));
  require_block(s.block);
  if (s.top_k > s.experts)
    throw InvalidArgument(fmt::format("top_k = {} exceeds the number of experts {}", s.top_k, s.experts));
  if (s.ffn % s.block != 0)
    throw InvalidArgument(fmt::format("ffn = {} is not a multiple of the block size {}", s.ffn, s.block));
  if (s.hidden % 64 != 0)
    throw InvalidArgument(fmt::format("hidden = {} is not a multiple of 64 (the tile width)", s.hidden));
  require_int32("hidden", s.hidden);
  require_int32("ffn", s.ffn);
  require_int32("experts", s.experts);
  // Products below are checked one factor at a time, so none of them overflows int64 first.
  require_int32("experts * ffn", s.experts * s.ffn);
  if (s.tokens > 0) {
    require_int32("tokens", s.tokens);
    require_int32("tokens * top_k", s.tokens * s.top_k);
    const int64_t rows = max_padded_rows(s);
    require_int32("padded rows (tokens * top_k + experts * (block - 1))", rows);
    require_int32("blocks ((padded rows / block) * (ffn / block))", rows / s.block * (s.ffn / s.block));
  }
}

namespace {

// Which spec fields a routing kernel is specialized on (activation: the epilogue field).
struct RoutingFields {
  bool dtype, hidden, experts, top_k, block, ffn, renorm, activation;
};

RoutingFields routing_fields(Op op) {
  switch (op) {
    case Op::Jitter: return {true, true, false, false, false, false, false, false};
    case Op::Router: return {false, false, true, true, false, false, true, false};
    case Op::Bins: return {false, false, true, true, true, false, false, false};
    case Op::Permute: return {false, false, true, true, false, false, false, false};
    case Op::Topology: return {false, false, true, false, true, true, false, false};
    case Op::Gather: return {true, true, true, true, false, false, false, false};
    case Op::Scatter: return {true, true, false, true, false, false, false, false};
    case Op::ScatterGrad: return {true, true, true, true, false, false, false, false};
    case Op::RouterGrad: return {true, false, true, true, false, false, true, false};
    case Op::Glu:
    case Op::GluGrad: return {true, false, false, false, true, true, false, true};
    default: return {};
  }
}

void validate_routing(const KernelSpec& k) {
  const RoutingFields f = routing_fields(k.op);
  const std::string_view op = to_string(k.op);
  auto unused = [&](std::string_view field, bool is_default) {
    if (!is_default)
      throw InvalidArgument(fmt::format("{} is not used by {} kernels and must be left at its default", field, op));
  };
  unused("dtype", f.dtype || k.dtype == DType::BF16);
  unused("hidden", f.hidden || k.hidden == 0);
  unused("experts", f.experts || k.experts == 0);
  unused("top_k", f.top_k || k.top_k == 0);
  unused("block", f.block || k.block == 0);
  unused("ffn", f.ffn || k.ffn == 0);
  unused("renorm_p", f.renorm || k.renorm_p == 0);
  unused("epilogue", f.activation || k.epilogue == Epilogue::None);
  unused("trans", !k.trans_a && !k.trans_b);
  unused("tile", k.tile == TileConfig{});
  unused("gather", !k.gather);
  unused("gated", !k.gated);
  unused("scatter", !k.scatter);
  if (f.hidden) {
    require_positive("hidden", k.hidden);
    if (k.hidden % 64 != 0)
      throw InvalidArgument(fmt::format("hidden = {} is not a multiple of 64 (the tile width)", k.hidden));
  }
  if (f.experts) {
    require_positive("experts", k.experts);
    if (k.experts > kMaxRoutingExperts)
      throw InvalidArgument(fmt::format("experts = {} exceeds the routing kernels' limit {}", k.experts,
                                        kMaxRoutingExperts));
  }
  if (f.top_k) {
    require_positive("top_k", k.top_k);
    if (f.experts && k.top_k > k.experts)
      throw InvalidArgument(fmt::format("top_k = {} exceeds the number of experts {}", k.top_k, k.experts));
  }
  if (f.block) require_block(k.block);
  if (f.ffn) {
    require_positive("ffn", k.ffn);
    if (k.ffn % k.block != 0)
      throw InvalidArgument(fmt::format("ffn = {} is not a multiple of the block size {}", k.ffn, k.block));
    require_int32("experts * ffn", int64_t{k.experts} * k.ffn);
  }
  if (f.renorm && k.renorm_p > 2)
    throw InvalidArgument(fmt::format("renorm_p = {} is not supported (expected 0, 1 or 2)", k.renorm_p));
  if (f.activation && is_gradient(k.epilogue))
    throw InvalidArgument(fmt::format("{} takes the layer's activation as a forward epilogue (none|gelu|silu|relu), "
                                      "not {}", op, to_string(k.epilogue)));
}

// The Hopper kernel's constraints (templates/dmoe/kernels/sm90_product.cuh).
void validate_wgmma(const KernelSpec& k) {
  const TileConfig& t = k.tile;
  const std::string name = fmt::format("wgmma tile {}x{}x{}", t.m, t.n, t.k);
  if (k.arch != Arch::SM90a)
    throw InvalidArgument(fmt::format("{} needs arch sm_90a, got {}", name, to_string(k.arch)));
  if (t.k != 64) throw InvalidArgument(fmt::format("{}: k = {} is not supported (expected 64)", name, t.k));
  if (t.warps != 12)
    throw InvalidArgument(fmt::format("{}: warps = {} is not supported (expected 12: three warpgroups)", name, t.warps));
  if (t.m != 64 && t.m != 128)
    throw InvalidArgument(fmt::format("{}: m = {} is not supported (expected 64 or 128)", name, t.m));
  if (t.pingpong) {
    // Each consumer warpgroup owns the whole tile: wgmma n = n, m / 64 row groups, m·n / 128 fp32
    // accumulators per thread: at most 128, or 192 for the plain (not gated) product, whose 128×192 tile
    // leaves 40 registers beside them (the spill check refuses a build that does not fit).
    if (t.n != 64 && t.n != 128 && t.n != 192 && t.n != 256)
      throw InvalidArgument(fmt::format("{} ping-pong: n = {} is not supported (expected 64, 128, 192 or 256)", name, t.n));
    const int sets = k.gated ? 2 : 1;  // the gated SDD keeps a and g
    const int max_acc = k.gated ? 128 : 192;
    if (sets * t.m * t.n / 128 > max_acc)
      throw InvalidArgument(fmt::format("{} ping-pong{}: m·n = {} needs {} accumulators per thread, over the {} "
                                        "a consumer warpgroup holds (m·n ≤ {})", name, k.gated ? " gated" : "",
                                        t.m * t.n, sets * t.m * t.n / 128, max_acc, max_acc * 128 / sets));
  } else {
    // Two consumer warpgroups share the tile: side by side along n when m = 64, each wgmma n in 64..256.
    const int per_wg = t.m == 64 ? t.n / 2 : t.n;
    if (t.n % 64 != 0 || (per_wg != 64 && per_wg != 128 && per_wg != 192 && per_wg != 256))
      throw InvalidArgument(fmt::format("{}: n = {} is not supported (expected 64, 128, 192 or 256 columns per "
                                        "consumer warpgroup; m = 64 splits n over two)", name, t.n));
    if (k.gated && per_wg > 128)
      throw InvalidArgument(fmt::format("{} gated: {} columns per consumer warpgroup need {} accumulators per "
                                        "thread, over the 128 it holds (at most 128 columns)", name, per_wg, per_wg));
  }
  // Tile rows: within a block for SDD and DSD, within hidden for DDS. Tile columns: within the expert's
  // ffn for SDD (several blocks allowed), within hidden for DSD, within a block for DDS with Sᵀ and
  // across whole blocks of one expert or within one for DDS with S.
  const int32_t m_extent = k.op == Op::DDS ? k.hidden : k.block;
  if (m_extent % t.m != 0)
    throw InvalidArgument(fmt::format("{}: m = {} does not divide {} = {}", name, t.m,
                                      k.op == Op::DDS ? "hidden" : "the block size", m_extent));
  if (k.op == Op::SDD) {
    if (k.ffn % t.n != 0)
      throw InvalidArgument(fmt::format("{}: n = {} does not divide ffn = {}", name, t.n, k.ffn));
    // No rule between n and the block size: the tile's 64-column chunks are loaded and stored block by
    // block (Tiles::store_box), so a tile need only lie within one expert's columns (ffn % n above).
  } else if (k.op == Op::DSD) {
    if (k.hidden % t.n != 0)
      throw InvalidArgument(fmt::format("{}: n = {} does not divide hidden = {}", name, t.n, k.hidden));
  } else if (t.n > k.block) {  // DDS: a tile across adjacent block columns of one expert
    if (k.trans_b)
      throw InvalidArgument(fmt::format("{}: n = {} is wider than the block size {}, which DDS allows with S only "
                                        "(trans_b false): Sᵀ's tile columns lie within a block", name, t.n, k.block));
    if (t.n % k.block != 0 || k.ffn % t.n != 0)
      throw InvalidArgument(fmt::format("{}: n = {} must be a multiple of the block size {} and divide ffn = {} (a "
                                        "DDS tile wider than a block spans one expert's block columns)",
                                        name, t.n, k.block, k.ffn));
  } else if (k.block % t.n != 0) {
    throw InvalidArgument(fmt::format("{}: n = {} does not divide the block size {}", name, t.n, k.block));
  }
  if (t.stages < 2 || t.stages > 8)
    throw InvalidArgument(fmt::format("{}: stages = {} is not supported (expected 2 to 8)", name, t.stages));
  if (t.store_chunks > 0) {
    // Each consumer warpgroup stages its rows in 64×64 chunks: cooperative, 64 rows × n / (m = 64 ? 2 : 1)
    // columns; ping-pong, the whole m × n tile.
    const int chunks = t.pingpong ? t.m / 64 * (t.n / 64) : (t.m == 64 ? t.n / 2 : t.n) / 64;
    if (is_gradient(k.epilogue) || k.gated || k.scatter)
      throw InvalidArgument(fmt::format("{}: store_chunks = {} serves the plain and the forward activation epilogues "
                                        "(not a gradient epilogue, the gated SDD or the scatter)", name, t.store_chunks));
    if (t.store_chunks >= chunks || chunks % t.store_chunks != 0)
      throw InvalidArgument(fmt::format("{}: store_chunks = {} must divide a consumer warpgroup's {} 64×64 output "
                                        "chunks and be fewer", name, t.store_chunks, chunks));
  }
  if (t.act_warps) {
    // The producer warpgroup's idle warps take the activation over from the consumers of a shared tile.
    if ((k.epilogue == Epilogue::None && !k.gated) || k.gather || t.pingpong || t.store_chunks > 0)
      throw InvalidArgument(fmt::format(
          "{}: act_warps serves the cooperative activation SDDs (forward, gradient, gated; not gathering) with "
          "whole-tile staging; this spec has epilogue {}{}{}{}{}", name, to_string(k.epilogue), k.gated ? ", gated" : "",
          k.gather ? ", gather" : "", t.pingpong ? ", ping-pong" : "",
          t.store_chunks > 0 ? fmt::format(", store_chunks = {}", t.store_chunks) : ""));
  }
  if (const int smem = dynamic_shared_bytes(k); smem > kSm90MaxSharedBytes)
    throw InvalidArgument(fmt::format("{}{}{} with {} stages needs {} bytes of shared memory, over the sm_90 limit {}",
                                      name, t.pingpong ? " ping-pong" : "", k.gated ? " gated" : "", t.stages, smem,
                                      kSm90MaxSharedBytes));
  if (t.group != 1 && t.group != 2 && t.group != 4 && t.group != 8 && t.group != 16)
    throw InvalidArgument(fmt::format("{}: group = {} is not supported (expected 1, 2, 4, 8 or 16)", name, t.group));
  if (t.cluster != 1 && t.cluster != 2)
    throw InvalidArgument(fmt::format("{}: cluster = {} is not supported (expected 1 or 2)", name, t.cluster));
  if (t.cluster > 1) {
    if (k.gather)
      throw InvalidArgument(fmt::format("{}: cluster = {} cannot gather (each CTA loads its gathered A rows itself; "
                                        "the cluster multicasts A by TMA)", name, t.cluster));
    // The cluster's CTAs take adjacent column tiles of one expert's block (SDD), of hidden (DSD) or of
    // a block (DDS): the column tiles there must pair up.
    const int32_t n_extent = k.op == Op::SDD ? k.ffn : k.op == Op::DSD ? k.hidden : std::max<int32_t>(k.block, t.n);
    const char* n_name = k.op == Op::SDD ? "ffn" : k.op == Op::DSD ? "hidden" : "the block size";
    if ((n_extent / t.n) % t.cluster != 0)
      throw InvalidArgument(fmt::format("{}: cluster = {} needs the column tiles to pair up, but {} = {} holds {} "
                                        "tiles of n = {}", name, t.cluster, n_name, n_extent, n_extent / t.n, t.n));
  }
}

// The Ampere-class kernel's constraints (templates/dmoe/kernels/sm80_product.cuh). Its decomposition is
// the SIMT kernel's: tile rows within a block (SDD, DSD) or hidden (DDS), tile columns within a block
// (SDD, DDS) or hidden (DSD).
void validate_mma_sync(const KernelSpec& k) {
  const TileConfig& t = k.tile;
  const std::string name = fmt::format("mma tile {}x{}x{}", t.m, t.n, t.k);
  if (t.m != 64 && t.m != 128)
    throw InvalidArgument(fmt::format("{}: m = {} is not supported (expected 64 or 128)", name, t.m));
  if (t.n != 64 && t.n != 128)
    throw InvalidArgument(fmt::format("{}: n = {} is not supported (expected 64 or 128)", name, t.n));
  if (t.k != 32 && t.k != 64)
    throw InvalidArgument(fmt::format("{}: k = {} is not supported (expected 32 or 64)", name, t.k));
  if (t.warps != 4 && t.warps != 8)
    throw InvalidArgument(fmt::format("{}: warps = {} is not supported (expected 4 or 8)", name, t.warps));
  const bool m_in_hidden = k.op == Op::DDS, n_in_hidden = k.op == Op::DSD;
  const int32_t m_extent = m_in_hidden ? k.hidden : k.block, n_extent = n_in_hidden ? k.hidden : k.block;
  if (m_extent % t.m != 0)
    throw InvalidArgument(fmt::format("{}: m = {} does not divide {} = {}", name, t.m,
                                      m_in_hidden ? "hidden" : "the block size", m_extent));
  if (n_extent % t.n != 0)
    throw InvalidArgument(fmt::format("{}: n = {} does not divide {} = {}", name, t.n,
                                      n_in_hidden ? "hidden" : "the block size", n_extent));
  if (k.op == Op::SDD && k.hidden % t.k != 0)
    throw InvalidArgument(fmt::format("{}: k = {} does not divide hidden = {} (the reduction)", name, t.k, k.hidden));
  if (t.stages < 2 || t.stages > 5)
    throw InvalidArgument(fmt::format("{}: stages = {} is not supported (expected 2 to 5)", name, t.stages));
  if (const int smem = sm80_smem_bytes(t.m, t.n, t.k, t.stages), limit = max_shared_bytes(k.arch); smem > limit)
    throw InvalidArgument(fmt::format("{} with {} stages needs {} bytes of shared memory, over the {} limit {}", name,
                                      t.stages, smem, to_string(k.arch), limit));
}

}  // namespace

std::string_view to_string(Mma m) {
  switch (m) {
    case Mma::Simt: return "simt";
    case Mma::Wgmma: return "wgmma";
    case Mma::MmaSync: return "mma";
  }
  return "?";
}
Mma parse_mma(std::string_view s) { return parse_enum("mma", s, std::array{Mma::Simt, Mma::Wgmma, Mma::MmaSync}); }

int max_shared_bytes(Arch a) {
  switch (a) {
    case Arch::SM80: return kSm80MaxSharedBytes;
    case Arch::SM86:
    case Arch::SM89: return kSm86MaxSharedBytes;
    case Arch::SM90a: return kSm90MaxSharedBytes;
  }
  return 0;
}

TileConfig mma_sync_tile(int m, int n, Arch arch, int k) {
  TileConfig t{static_cast<uint16_t>(m), static_cast<uint16_t>(n), static_cast<uint16_t>(k), 8, 2, Mma::MmaSync};
  while (t.stages < 5 && sm80_smem_bytes(m, n, t.k, t.stages + 1) <= max_shared_bytes(arch)) ++t.stages;
  return t;
}

int wgmma_stages(const KernelSpec& k) {
  KernelSpec s = k;
  for (s.tile.stages = 8; s.tile.stages > 2 && dynamic_shared_bytes(s) > kSm90MaxSharedBytes; --s.tile.stages) {
  }
  return s.tile.stages;
}

KernelSpec with_tile_if_valid(const KernelSpec& k, const TileConfig& t) {
  KernelSpec c = k;
  c.tile = t;
  try {
    validate(c);
  } catch (const InvalidArgument&) {
    return k;
  }
  return c;
}

KernelSpec with_gather(KernelSpec k) {
  k.gather = true;
  k.tile.act_warps = false;
  return k;
}

TileConfig wgmma_tile(int m, int n, bool pingpong, bool gated, int store_chunks) {
  TileConfig t{static_cast<uint16_t>(m), static_cast<uint16_t>(n), 64, 12, 2, Mma::Wgmma};
  t.pingpong = pingpong;
  t.store_chunks = static_cast<uint8_t>(store_chunks);
  while (t.stages < 8 && sm90_smem_bytes(m, n, t.stages + 1, pingpong, gated, store_chunks) <= kSm90MaxSharedBytes)
    ++t.stages;
  return t;
}

void validate(const KernelSpec& k) {
  if (!is_product(k.op)) return validate_routing(k);
  if (k.top_k != 0 || k.renorm_p != 0)
    throw InvalidArgument(fmt::format("top_k and renorm_p are not used by {} kernels and must be 0", to_string(k.op)));
  require_block(k.block);
  require_positive("hidden", k.hidden);
  require_positive("ffn", k.ffn);
  require_positive("experts", k.experts);
  if (k.epilogue != Epilogue::None && k.op != Op::SDD)
    throw InvalidArgument(fmt::format("epilogue {} applies to SDD only (the hidden activation), not {}",
                                      to_string(k.epilogue), to_string(k.op)));
  if (k.ffn % k.block != 0)
    throw InvalidArgument(fmt::format("ffn = {} is not a multiple of the block size {}", k.ffn, k.block));
  require_int32("experts * ffn", int64_t{k.experts} * k.ffn);
  if (k.gather && (k.op != Op::SDD || k.trans_a))
    throw InvalidArgument(fmt::format("gather applies to SDD with a row-major A (trans_a false) only, not {} {}{}",
                                      to_string(k.op), k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n'));
  if (k.gated && (k.op != Op::SDD || is_gradient(k.epilogue)))
    throw InvalidArgument(fmt::format("gated applies to SDD with a forward epilogue (none|gelu|silu|relu) only, not {}{}",
                                      to_string(k.op), k.op == Op::SDD ? fmt::format(" {}", to_string(k.epilogue)) : ""));
  if (k.scatter && (k.op != Op::DSD || k.trans_a || k.trans_b))
    throw InvalidArgument(fmt::format("scatter applies to DSD nn (S · B into token rows) only, not {} {}{}",
                                      to_string(k.op), k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n'));
  if (k.scatter && k.tile.mma != Mma::Wgmma)
    throw InvalidArgument(fmt::format("scatter is implemented by the wgmma kernel (sm_90a) only, not the {} kernel",
                                      to_string(k.tile.mma)));
  if (k.gated && k.tile.mma != Mma::Wgmma)
    throw InvalidArgument(fmt::format("gated is implemented by the wgmma kernel (sm_90a) only, not the {} kernel",
                                      to_string(k.tile.mma)));
  if (k.gather && k.tile.mma != Mma::Wgmma)
    throw InvalidArgument(fmt::format("gather is implemented by the wgmma kernel (sm_90a) only, not the {} kernel",
                                      to_string(k.tile.mma)));
  if (k.tile.mma == Mma::Wgmma) return validate_wgmma(k);
  if (k.tile.group != TileConfig::kDefaultGroup)
    throw InvalidArgument(fmt::format("tile group = {} applies to the wgmma kernel only (the {} kernel takes the "
                                      "default {})", k.tile.group, to_string(k.tile.mma), TileConfig::kDefaultGroup));
  if (k.tile.pingpong)
    throw InvalidArgument(fmt::format("the ping-pong schedule applies to the wgmma kernel only, not {}",
                                      to_string(k.tile.mma)));
  if (k.tile.cluster != 1)
    throw InvalidArgument(fmt::format("cluster = {} applies to the wgmma kernel only (the {} kernel runs CTAs alone)",
                                      k.tile.cluster, to_string(k.tile.mma)));
  if (k.tile.store_chunks != 0)
    throw InvalidArgument(fmt::format("store_chunks = {} applies to the wgmma kernel only, not {}",
                                      k.tile.store_chunks, to_string(k.tile.mma)));
  if (k.tile.act_warps)
    throw InvalidArgument(fmt::format("act_warps applies to the wgmma kernel only, not {}", to_string(k.tile.mma)));
  if (k.tile.mma == Mma::MmaSync) return validate_mma_sync(k);
  const TileConfig& t = k.tile;
  for (auto [name, v] : {std::pair{"tile m", t.m}, std::pair{"tile n", t.n}}) {
    if (v != 32 && v != 64 && v != 128)
      throw InvalidArgument(fmt::format("{} = {} is not supported (expected 32, 64 or 128)", name, v));
    if (k.block % v != 0)
      throw InvalidArgument(fmt::format("{} = {} does not divide the block size {}", name, v, k.block));
    if (k.hidden % v != 0)
      throw InvalidArgument(fmt::format("hidden = {} is not a multiple of {} = {}", k.hidden, name, v));
  }
  if (t.k != 16 && t.k != 32 && t.k != 64)
    throw InvalidArgument(fmt::format("tile k = {} is not supported (expected 16, 32 or 64)", t.k));
  if (k.hidden % t.k != 0)
    throw InvalidArgument(fmt::format("hidden = {} is not a multiple of tile k = {}", k.hidden, t.k));
  if (t.warps != 4 && t.warps != 8)
    throw InvalidArgument(fmt::format("tile warps = {} is not supported (expected 4 or 8)", t.warps));
  // Each thread owns an (m/8)×(n/(4·warps)) patch of the tile: it must be at least one element.
  if (int64_t{t.m} * t.n < 32 * t.warps * 4)
    throw InvalidArgument(fmt::format("tile {}x{} is too small for {} warps (needs at least {} elements)",
                                      t.m, t.n, t.warps, 32 * t.warps * 4));
  if (const int tx = t.n / 4, ty = 32 * t.warps / tx; ty == 0 || t.m % ty != 0)
    throw InvalidArgument(fmt::format("tile {}x{} cannot be split over {} warps ({} thread rows do not divide {})",
                                      t.m, t.n, t.warps, ty, t.m));
  if (t.stages != 1)
    throw InvalidArgument(fmt::format("tile stages = {} is not supported by this kernel (expected 1)", t.stages));
}

namespace {

// What names a product apart from its tile, epilogue and arch: sdd_nt_bf16_b128_h1024_f4096_e64.
std::string product_stem(const KernelSpec& k) {
  return fmt::format("{}_{}{}_{}_b{}_h{}_f{}_e{}", to_string(k.op), k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n',
                     to_string(k.dtype), k.block, k.hidden, k.ffn, k.experts);
}

std::string epilogue_suffix(const KernelSpec& k) {
  return k.epilogue == Epilogue::None ? "" : fmt::format("_{}", to_string(k.epilogue));
}

std::string_view gather_suffix(const KernelSpec& k) { return k.gather ? "_gather" : k.scatter ? "_scatter" : ""; }

// The gated SDD after its activation: _silu_glu (SwiGLU), _gelu_glu, _none_glu (bilinear).
std::string gated_suffix(const KernelSpec& k) {
  return k.gated ? fmt::format("{}_glu", k.epilogue == Epilogue::None ? "_none" : "") : "";
}

}  // namespace

std::string kernel_name(const KernelSpec& k) {
  if (!is_product(k.op)) {
    const RoutingFields f = routing_fields(k.op);
    std::string name = fmt::format("dmoe_{}", to_string(k.op));
    if (f.dtype) name += fmt::format("_{}", to_string(k.dtype));
    if (f.experts) name += fmt::format("_e{}", k.experts);
    if (f.top_k) name += fmt::format("_k{}", k.top_k);
    if (f.block) name += fmt::format("_b{}", k.block);
    if (f.hidden) name += fmt::format("_h{}", k.hidden);
    if (f.ffn) name += fmt::format("_f{}", k.ffn);
    if (f.renorm) name += fmt::format("_p{}", k.renorm_p);
    if (f.activation) name += fmt::format("_{}", to_string(k.epilogue));
    return name + fmt::format("_sm{}", to_string(k.arch).substr(3));
  }
  // The product's stem, then its tile: wg{m}x{n}x{k}s{stages}[g{group}][pp] (wgmma; the group only when
  // it is not the default, pp for ping-pong, so default names stay as they were), mma{m}x{n}x{k}w{warps}s{stages} (mma.sync),
  // t{m}x{n}x{k}w{warps}s{stages} (SIMT), then the epilogue and the arch.
  const TileConfig& t = k.tile;
  const std::string group = t.group == TileConfig::kDefaultGroup ? "" : fmt::format("g{}", t.group);
  const std::string tile = t.mma == Mma::Wgmma
                               ? fmt::format("wg{}x{}x{}s{}{}{}{}{}{}", t.m, t.n, t.k, t.stages, group,
                                             t.pingpong ? "pp" : "", t.cluster > 1 ? fmt::format("c{}", t.cluster) : "",
                                             t.store_chunks > 0 ? fmt::format("st{}", t.store_chunks) : "",
                                             t.act_warps ? "aw" : "")
                               : fmt::format("{}{}x{}x{}w{}s{}", t.mma == Mma::MmaSync ? "mma" : "t", t.m, t.n, t.k,
                                             t.warps, t.stages);
  return fmt::format("dmoe_{}_{}{}{}{}_sm{}", product_stem(k), tile, epilogue_suffix(k), gated_suffix(k),
                     gather_suffix(k), to_string(k.arch).substr(3));
}

std::string tuning_problem(const KernelSpec& k) {
  return fmt::format("{}{}{}_sm{}", product_stem(k), epilogue_suffix(k), gated_suffix(k), to_string(k.arch).substr(3));
}

int threads_per_cta(const KernelSpec& k) {
  switch (k.op) {
    case Op::SDD:
    case Op::DSD:
    case Op::DDS: return 32 * k.tile.warps;  // Wgmma: 12 warps; MmaSync: 4 or 8
    case Op::Bins: return kMaxRoutingExperts;
    case Op::Router: return 32 * router_warps(k.experts);
    case Op::Permute: return 32;
    case Op::RouterGrad: return router_grad_threads(k.experts, k.top_k);
    default: return 256;
  }
}

int dynamic_shared_bytes(const KernelSpec& k) {
  if (!is_product(k.op)) return 0;  // routing kernels use static shared memory only
  if (k.tile.mma == Mma::Wgmma)
    return sm90_smem_bytes(k.tile.m, k.tile.n, k.tile.stages, k.tile.pingpong, k.gated, k.tile.store_chunks,
                           sm90_act_extra_bytes(k.tile.m, k.tile.n, k.tile.act_warps, k.gated, is_gradient(k.epilogue)));
  if (k.tile.mma == Mma::MmaSync) return sm80_smem_bytes(k.tile.m, k.tile.n, k.tile.k, k.tile.stages);
  return static_cast<int>(product_smem_bytes(k.tile.m, k.tile.n, k.tile.k));
}

KernelSpec default_spec(const MoeShape& s, Op op, bool trans_a, bool trans_b, Arch arch, Epilogue epilogue,
                        bool gated) {
  validate(s);
  KernelSpec k;
  k.op = op;
  k.trans_a = trans_a;
  k.trans_b = trans_b;
  k.dtype = s.dtype;
  k.arch = arch;
  k.block = static_cast<int32_t>(s.block);
  k.hidden = static_cast<int32_t>(s.hidden);
  k.ffn = static_cast<int32_t>(s.ffn);
  k.experts = static_cast<int32_t>(s.experts);
  k.epilogue = epilogue;
  k.gated = gated;
  k.tile = TileConfig{64, 64, 32, 8, 1};
  if (gated && arch != Arch::SM90a)
    throw InvalidArgument(fmt::format("gated is implemented by the wgmma kernel (sm_90a) only, not on {}",
                                      to_string(arch)));
  if (arch == Arch::SM90a) {
    // Shapes no wgmma tile divides (hidden or ffn an odd multiple of 64 with small blocks) keep the SIMT
    // kernel.
    // The gated SDD holds two accumulator sets: cooperative 128×128 (ping-pong tiles would be half as big).
    // The activation SDDs run ping-pong at small H, where one warpgroup's epilogue hides under the other's
    // short main loop; cooperative with the activation warps from H 2048 forward (fine-grained +silu
    // 0.84 → 0.90 of cuBLAS paired, session 18) and above H 2048 for the gradients (cooperative without
    // the activation warps was slower at H 2048; with them, not measured there).
    const bool pingpong = epilogue != Epilogue::None && op == Op::SDD && !gated &&
                          (is_gradient(epilogue) ? s.hidden <= 2048 : s.hidden < 2048);
    std::optional<TileConfig> t = default_wgmma_tile(k, pingpong);
    if (!t && pingpong) t = default_wgmma_tile(k, false);
    if (t) k.tile = *t;
    validate(k);
    return k;
  } else {
    // 128×128 over 8 warps (64×32 warp tiles), narrower where a block (B = 64) or hidden bounds the tile.
    for (auto [m, n] : {std::pair{128, 128}, {128, 64}, {64, 128}, {64, 64}}) {
      KernelSpec w = k;
      w.tile = mma_sync_tile(m, n, arch);
      try {
        validate(w);
      } catch (const InvalidArgument&) {
        continue;
      }
      return w;
    }
  }
  validate(k);
  return k;
}

std::optional<TileConfig> default_wgmma_tile(const KernelSpec& k, bool pingpong) {
  // Cooperative: 128 rows over two consumer warpgroups, as many columns as divide (fewer loads per FLOP).
  // Ping-pong: the largest tile one warpgroup holds (128 accumulators per thread), square first.
  static constexpr std::pair<int, int> kCooperative[] = {{128, 256}, {128, 128}, {128, 64},
                                                         {64, 256},  {64, 128},  {64, 64}};
  static constexpr std::pair<int, int> kPingpong[] = {{128, 128}, {64, 256}, {64, 128}, {128, 64}, {64, 64}};
  for (auto [m, n] : pingpong ? std::span<const std::pair<int, int>>(kPingpong)
                              : std::span<const std::pair<int, int>>(kCooperative)) {
    KernelSpec w = k;
    w.arch = Arch::SM90a;
    w.tile = wgmma_tile(m, n, pingpong, k.gated);
    try {
      validate(w);
    } catch (const InvalidArgument&) {
      continue;
    }
    // A cooperative activation SDD hands its epilogue to the producer's idle warps (product v36: 4–8 %
    // faster at the large shapes, where the consumers' epilogue had idled the tensor cores), a stage fewer
    // where a gradient's pre-activation chunk needs the room. Not the gated SDD by default: its g tile
    // costs a stage of its four (not measured against it yet).
    KernelSpec aw = w;
    aw.tile.act_warps = !k.gated;
    aw.tile.stages = static_cast<uint8_t>(std::min<int>(aw.tile.stages, wgmma_stages(aw)));
    try {
      validate(aw);
      return aw.tile;
    } catch (const InvalidArgument&) {
    }
    return w.tile;
  }
  return std::nullopt;
}

KernelSpec routing_spec(const MoeShape& s, Op op, Arch arch, int renorm_p) {
  if (is_product(op)) throw InvalidArgument(fmt::format("{} is not a routing kernel", to_string(op)));
  validate(s);
  const RoutingFields f = routing_fields(op);
  KernelSpec k;
  k.op = op;
  k.trans_a = k.trans_b = false;
  k.arch = arch;
  k.block = f.block ? int32_t(s.block) : 0;
  k.hidden = f.hidden ? int32_t(s.hidden) : 0;
  k.ffn = f.ffn ? int32_t(s.ffn) : 0;
  k.experts = f.experts ? int32_t(s.experts) : 0;
  k.top_k = f.top_k ? int32_t(s.top_k) : 0;
  k.dtype = f.dtype ? s.dtype : DType::BF16;
  k.renorm_p = f.renorm ? uint8_t(renorm_p) : 0;
  k.epilogue = f.activation ? epilogue_of(s.activation) : Epilogue::None;
  if (f.renorm && (renorm_p < 0 || renorm_p > 2))
    throw InvalidArgument(fmt::format("renorm_p = {} is not supported (expected 0, 1 or 2)", renorm_p));
  validate(k);
  return k;
}

std::vector<KernelSpec> layer_kernels(const MoeShape& s, Arch arch) {
  // Forward: SDD NT (x·w1ᵀ), DSD NN (act·w2). Backward: SDD NT (dy·w2ᵀ), DSD NN (dH·w1), DSD TN
  // (actᵀ·dy and dHᵀ·x). A plain layer with an activation fuses it (and its gradient) into the SDDs; gated
  // layers apply it in the Glu kernels, so their backward SDD is the forward one. (The forward SDD does not
  // gather: KernelSpec::gather measured slower than the gather kernel plus the plain SDD, bench/NOTES.md.)
  // On sm_90a a gated layer's forward SDD is the gated one (both products and the GLU in one pass); its
  // backward SDD is then a plain one of its own.
  const bool fused = !s.gated && s.activation != Activation::None;
  const bool glu = s.gated && arch == Arch::SM90a;
  std::vector<KernelSpec> k{
      glu ? default_spec(s, Op::SDD, false, true, arch, epilogue_of(s.activation), true)
          : default_spec(s, Op::SDD, false, true, arch, fused ? epilogue_of(s.activation) : Epilogue::None),
      default_spec(s, Op::DSD, false, false, arch)};
  if (fused) k.push_back(default_spec(s, Op::SDD, false, true, arch, gradient_epilogue_of(s.activation)));
  if (glu) k.push_back(default_spec(s, Op::SDD, false, true, arch));
  k.push_back(default_spec(s, Op::DSD, true, false, arch));
  return k;
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> kPresets = [] {
    auto shape = [](int64_t h, int64_t f, int64_t e, int64_t k, Activation a, bool gated, int64_t t) {
      MoeShape s;
      s.hidden = h;
      s.ffn = f;
      s.experts = e;
      s.top_k = k;
      s.activation = a;
      s.gated = gated;
      s.tokens = t;
      return s;
    };
    return std::vector<Preset>{
        {"mb-46m", shape(512, 2048, 64, 1, Activation::GeluTanh, false, 65536)},
        {"mb-356m", shape(1024, 4096, 64, 1, Activation::GeluTanh, false, 16384)},
        {"mixtral-8x7b", shape(4096, 14336, 8, 2, Activation::Silu, true, 8192)},
        {"fine-grained", shape(2048, 1408, 64, 6, Activation::Silu, true, 8192)},
        {"deepseek-v3", shape(7168, 2048, 256, 8, Activation::Silu, true, 16384)},
        {"tiny", shape(128, 256, 4, 2, Activation::GeluTanh, false, 512)},
    };
  }();
  return kPresets;
}

const MoeShape& preset(std::string_view name) {
  std::string known;
  for (const Preset& p : presets()) {
    if (p.name == name) return p.shape;
    known += fmt::format("{}{}", known.empty() ? "" : ", ", p.name);
  }
  throw InvalidArgument(fmt::format("unknown preset '{}' (known: {})", name, known));
}

size_t KernelSpecHash::operator()(const KernelSpec& k) const noexcept {
  // Pack every field into two words, then mix: a hit costs a few integer operations.
  const uint64_t a = uint64_t(k.op) | uint64_t(k.trans_a) << 8 | uint64_t(k.trans_b) << 9 |
                     uint64_t(k.dtype) << 10 | uint64_t(k.arch) << 12 |
                     uint64_t(k.tile.m) << 16 | uint64_t(k.tile.n) << 32 | uint64_t(k.tile.k) << 48;
  const uint64_t b = uint64_t(uint32_t(k.hidden)) | uint64_t(uint32_t(k.ffn)) << 32;
  const uint64_t c = uint64_t(uint32_t(k.experts)) | uint64_t(uint32_t(k.block)) << 32;
  const uint64_t d = uint64_t(k.tile.warps) | uint64_t(k.tile.stages) << 8 | uint64_t(k.renorm_p) << 16 |
                     uint64_t(k.tile.mma) << 24 | uint64_t(k.epilogue) << 26 |
                     uint64_t(uint32_t(k.top_k)) << 32;
  const uint64_t e = uint64_t(k.tile.group) | uint64_t(k.tile.pingpong) << 8 | uint64_t(k.gather) << 9 |
                     uint64_t(k.gated) << 10 | uint64_t(k.tile.cluster) << 11 |
                     uint64_t(k.scatter) << 19 | uint64_t(k.tile.store_chunks) << 20 |
                     uint64_t(k.tile.act_warps) << 28;
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (uint64_t w : {a, b, c, d, e}) {
    h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
  }
  return static_cast<size_t>(h);
}

}  // namespace dmoe

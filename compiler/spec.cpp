#include "dmoe/spec.hpp"

#include "dmoe/args.cuh"

#include <fmt/format.h>

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
  }
  return "?";
}
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
std::string_view to_string(Epilogue) { return "none"; }

Op parse_op(std::string_view s) { return parse_enum("op", s, std::array{Op::SDD, Op::DSD, Op::DDS}); }
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

void validate(const KernelSpec& k) {
  require_block(k.block);
  require_positive("hidden", k.hidden);
  require_positive("ffn", k.ffn);
  require_positive("experts", k.experts);
  if (k.ffn % k.block != 0)
    throw InvalidArgument(fmt::format("ffn = {} is not a multiple of the block size {}", k.ffn, k.block));
  require_int32("experts * ffn", int64_t{k.experts} * k.ffn);
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

std::string kernel_name(const KernelSpec& k) {
  return fmt::format("dmoe_{}_{}{}_{}_b{}_h{}_f{}_e{}_t{}x{}x{}w{}s{}_sm{}", to_string(k.op),
                     k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n', to_string(k.dtype), k.block, k.hidden,
                     k.ffn, k.experts, k.tile.m, k.tile.n, k.tile.k, k.tile.warps, k.tile.stages,
                     to_string(k.arch).substr(3));
}

int threads_per_cta(const KernelSpec& k) { return 32 * k.tile.warps; }

int dynamic_shared_bytes(const KernelSpec& k) {
  return static_cast<int>(product_smem_bytes(k.tile.m, k.tile.n, k.tile.k));
}

KernelSpec default_spec(const MoeShape& s, Op op, bool trans_a, bool trans_b, Arch arch) {
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
  k.tile = TileConfig{64, 64, 32, 8, 1};
  validate(k);
  return k;
}

std::vector<KernelSpec> layer_kernels(const MoeShape& s, Arch arch) {
  // Forward: SDD NT (x·w1ᵀ), DSD NN (act·w2). Backward: SDD NT (dy·w2ᵀ), DSD NN (dH·w1), DSD TN
  // (actᵀ·dy and dHᵀ·x). Without fused epilogues the backward SDD is the forward one.
  return {default_spec(s, Op::SDD, false, true, arch), default_spec(s, Op::DSD, false, false, arch),
          default_spec(s, Op::DSD, true, false, arch)};
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
  const uint64_t a = uint64_t(k.op) | uint64_t(k.trans_a) << 2 | uint64_t(k.trans_b) << 3 |
                     uint64_t(k.dtype) << 4 | uint64_t(k.arch) << 6 | uint64_t(k.epilogue) << 9 |
                     uint64_t(k.tile.m) << 16 | uint64_t(k.tile.n) << 32 | uint64_t(k.tile.k) << 48;
  const uint64_t b = uint64_t(uint32_t(k.hidden)) | uint64_t(uint32_t(k.ffn)) << 32;
  const uint64_t c = uint64_t(uint32_t(k.experts)) | uint64_t(uint32_t(k.block)) << 32;
  const uint64_t d = uint64_t(k.tile.warps) | uint64_t(k.tile.stages) << 8;
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (uint64_t w : {a, b, c, d}) {
    h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
  }
  return static_cast<size_t>(h);
}

}  // namespace dmoe

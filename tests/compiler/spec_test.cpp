// Descriptor validation: every error path names the value and the limit.
#include <doctest/doctest.h>

#include "dmoe/args.cuh"

#include <unordered_set>

#include "dmoe/compiler.hpp"
#include "dmoe/spec.hpp"

using namespace dmoe;

namespace {

MoeShape shape() {
  MoeShape s;
  s.hidden = 1024;
  s.ffn = 4096;
  s.experts = 64;
  s.top_k = 2;
  s.block = 128;
  s.tokens = 16384;
  return s;
}

// The SIMT kernel's spec (the sm_90a default is the wgmma kernel, tested on its own below).
KernelSpec spec() {
  KernelSpec k = default_spec(shape(), Op::SDD, false, true, Arch::SM90a);
  k.tile = TileConfig{64, 64, 32, 8, 1};
  return k;
}

// Runs f, expects InvalidArgument, and checks its message holds every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL("no error for bad input");
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) {
      INFO("message: " << msg);
      CHECK(msg.find(frag) != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("MoeShape: valid presets pass") {
  for (const Preset& p : presets()) {
    INFO(p.name);
    CHECK_NOTHROW(validate(p.shape));
  }
  CHECK(preset("mixtral-8x7b").ffn == 14336);
  expect_error([] { preset("gpt-5"); }, {"gpt-5", "mb-46m", "deepseek-v3"});
}

TEST_CASE("MoeShape: non-positive sizes") {
  for (int field = 0; field < 4; ++field)
    for (int64_t bad : {0, -5}) {
      MoeShape s = shape();
      const char* name = nullptr;
      switch (field) {
        case 0: s.hidden = bad, name = "hidden"; break;
        case 1: s.ffn = bad, name = "ffn"; break;
        case 2: s.experts = bad, name = "experts"; break;
        case 3: s.top_k = bad, name = "top_k"; break;
      }
      expect_error([&] { validate(s); }, {name, std::to_string(bad).c_str(), "positive"});
    }
  MoeShape s = shape();
  s.tokens = -1;
  expect_error([&] { validate(s); }, {"tokens", "-1"});
}

TEST_CASE("MoeShape: divisibility and block sizes") {
  MoeShape s = shape();
  s.ffn = 1000;
  expect_error([&] { validate(s); }, {"ffn = 1000", "block size 128"});
  s = shape();
  s.hidden = 1000;
  expect_error([&] { validate(s); }, {"hidden = 1000", "64"});
  s = shape();
  s.block = 96;
  expect_error([&] { validate(s); }, {"96", "64, 128 or 256"});
  s = preset("fine-grained");
  s.block = 256;  // F = 1408 is 5.5 blocks of 256
  expect_error([&] { validate(s); }, {"ffn = 1408", "256"});
  s = shape();
  s.top_k = 65;
  expect_error([&] { validate(s); }, {"top_k = 65", "64"});
}

TEST_CASE("MoeShape: 32-bit overflow of derived sizes") {
  MoeShape s = shape();
  s.experts = 1 << 20;
  s.ffn = 4096;
  s.top_k = 1;
  expect_error([&] { validate(s); }, {"experts * ffn", "2147483647"});
  s = shape();
  s.tokens = int64_t{1} << 30;
  s.top_k = 4;
  expect_error([&] { validate(s); }, {"tokens * top_k", "4294967296", "2147483647"});
  s = shape();
  s.tokens = 2147480000;  // fits, but adding E·(B−1) = 8128 padding rows does not
  s.top_k = 1;
  s.experts = 64;
  expect_error([&] { validate(s); }, {"padded rows", "2147483647"});
  s = shape();
  s.tokens = 100000000;  // 100M rows fit, but 781K block rows × 8192 blocks per row do not
  s.top_k = 1;
  s.experts = 1;
  s.ffn = 1 << 20;
  expect_error([&] { validate(s); }, {"blocks", "2147483647"});
  s = shape();
  s.tokens = int64_t{5} << 32;
  expect_error([&] { validate(s); }, {"tokens", "2147483647"});
}

TEST_CASE("max_padded_rows bounds T·K + E·(B−1)") {
  MoeShape s = shape();
  CHECK(max_padded_rows(s) == (16384 * 2 + 64 * 127 + 127) / 128 * 128);
  CHECK(max_padded_rows(s) % 128 == 0);
}

TEST_CASE("KernelSpec: validation") {
  CHECK_NOTHROW(validate(spec()));
  KernelSpec k = spec();
  k.block = 100;
  expect_error([&] { validate(k); }, {"block size 100"});
  k = spec();
  k.ffn = 4000;
  expect_error([&] { validate(k); }, {"ffn = 4000", "128"});
  k = spec();
  k.hidden = 0;
  expect_error([&] { validate(k); }, {"hidden", "positive"});
  k = spec();
  k.experts = -1;
  expect_error([&] { validate(k); }, {"experts", "-1"});
  k = spec();
  k.experts = 1 << 20;
  expect_error([&] { validate(k); }, {"experts * ffn", "2147483647"});
  k = spec();
  k.tile.m = 48;
  expect_error([&] { validate(k); }, {"tile m = 48"});
  k = spec();
  k.block = 64;
  k.tile.n = 128;
  expect_error([&] { validate(k); }, {"tile n = 128", "block size 64"});
  k = spec();
  k.hidden = 64 * 3;
  k.tile.n = 128;
  expect_error([&] { validate(k); }, {"hidden = 192", "tile n = 128"});
  k = spec();
  k.tile.k = 8;
  expect_error([&] { validate(k); }, {"tile k = 8"});
  k = spec();
  k.tile.warps = 3;
  expect_error([&] { validate(k); }, {"warps = 3"});
  k = spec();
  k.tile = TileConfig{32, 32, 32, 8, 1};  // 1024 elements over 256 threads: fits
  CHECK_NOTHROW(validate(k));
  k.tile = TileConfig{32, 128, 32, 8, 1};  // 8 thread rows of 32 columns ... fits
  CHECK_NOTHROW(validate(k));
  k.tile.stages = 3;
  expect_error([&] { validate(k); }, {"stages = 3"});
}

TEST_CASE("parsers name the bad value and the accepted ones") {
  CHECK(parse_op("SDD") == Op::SDD);
  CHECK(parse_arch("sm_90a") == Arch::SM90a);
  CHECK(parse_dtype("fp16") == DType::FP16);
  CHECK(parse_trans("tn") == std::pair{true, false});
  expect_error([] { parse_op("gemm"); }, {"gemm", "sdd|dsd|dds"});
  expect_error([] { parse_arch("sm_100"); }, {"sm_100", "sm_80|sm_86|sm_89|sm_90a"});
  expect_error([] { parse_arch("sm_90"); }, {"sm_90", "sm_90a"});
  expect_error([] { parse_dtype("fp8"); }, {"fp8", "bf16|fp16"});
  expect_error([] { parse_trans("nx"); }, {"nx", "nn|nt|tn|tt"});
  expect_error([] { parse_activation("tanh"); }, {"tanh", "gelu"});
}

TEST_CASE("kernel names are canonical, readable and distinct") {
  KernelSpec k = spec();
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_t64x64x32w8s1_sm90a");
  std::unordered_set<std::string> names;
  std::unordered_set<KernelSpec> specs;
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (DType dt : {DType::BF16, DType::FP16})
          for (Arch arch : {Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90a}) {
            KernelSpec s = spec();
            s.op = op, s.trans_a = ta, s.trans_b = tb, s.dtype = dt, s.arch = arch;
            names.insert(kernel_name(s));
            specs.insert(s);
          }
  CHECK(names.size() == 3 * 2 * 2 * 2 * 4);
  CHECK(specs.size() == names.size());
}

TEST_CASE("layer_kernels lists the products the layer launches, in launch order") {
  // A plain layer with an activation: the SDDs carry it (forward) and its gradient (backward).
  const auto ks = layer_kernels(preset("mb-356m"), Arch::SM90a);
  REQUIRE(ks.size() == 4);
  CHECK(kernel_name(ks[0]) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5pp_gelu_sm90a");
  CHECK(kernel_name(ks[1]) == "dmoe_dsd_nn_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a");
  CHECK(kernel_name(ks[2]) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5pp_dgelu_sm90a");
  CHECK(kernel_name(ks[3]) == "dmoe_dsd_tn_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a");
  // Gated layers: on sm_90a the gated SDD (the activation and the GLU in its epilogue), then the plain
  // backward SDD; elsewhere the activation is applied in Glu and one plain SDD serves both.
  const auto gated = layer_kernels(preset("mixtral-8x7b"), Arch::SM90a);
  REQUIRE(gated.size() == 4);
  CHECK(gated[0].gated);
  CHECK(gated[0].epilogue == Epilogue::Silu);
  CHECK(gated[1].op == Op::DSD);
  CHECK(gated[2].op == Op::SDD);
  CHECK(gated[2].epilogue == Epilogue::None);
  CHECK(gated[3].trans_a);
  const auto gated80 = layer_kernels(preset("mixtral-8x7b"), Arch::SM80);
  REQUIRE(gated80.size() == 3);
  CHECK(gated80[0].epilogue == Epilogue::None);
  CHECK_FALSE(gated80[0].gated);
  for (const KernelSpec& k : gated) CHECK_FALSE(k.gather);  // the gathering SDD measured slower
  // No activation: no epilogue either.
  MoeShape linear = preset("mb-356m");
  linear.activation = Activation::None;
  CHECK(layer_kernels(linear, Arch::SM90a).size() == 3);
  CHECK(gradient_epilogue_of(Activation::Silu) == Epilogue::SiluGrad);
  CHECK(gradient_epilogue_of(Activation::None) == Epilogue::None);
}

TEST_CASE("sm_90a defaults to the wgmma kernel; sm_80, sm_86 and sm_89 to the mma.sync kernel") {
  const MoeShape s = preset("mb-356m");
  const KernelSpec sdd = default_spec(s, Op::SDD, false, true, Arch::SM90a);
  CHECK(sdd.tile.mma == Mma::Wgmma);
  CHECK(sdd.tile == TileConfig{128, 256, 64, 12, 3, Mma::Wgmma});
  CHECK(kernel_name(sdd) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a");
  CHECK(threads_per_cta(sdd) == 384);
  CHECK(dynamic_shared_bytes(sdd) == sm90_smem_bytes(128, 256, 3));
  // DDS with S: tiles of 256 columns across two block columns of one expert; with Sᵀ: within a block.
  CHECK(default_spec(s, Op::DDS, false, false, Arch::SM90a).tile == TileConfig{128, 256, 64, 12, 3, Mma::Wgmma});
  CHECK(default_spec(s, Op::DDS, false, true, Arch::SM90a).tile == TileConfig{128, 128, 64, 12, 6, Mma::Wgmma});
  CHECK(default_spec(s, Op::SDD, false, true, Arch::SM80).tile.mma == Mma::MmaSync);
  // B = 64: tile rows stay within a block, so two consumer warpgroups split the columns.
  MoeShape small = s;
  small.block = 64;
  CHECK(default_spec(small, Op::DSD, false, false, Arch::SM90a).tile.m == 64);
  // No wgmma tile divides hidden = 192 with B = 64 for DDS with Sᵀ (n within the block, m | hidden with
  // two warpgroups): the SIMT kernel stays, still a valid spec. With S, 64×256 spans four blocks.
  small.hidden = 192;
  const KernelSpec dds = default_spec(small, Op::DDS, false, true, Arch::SM90a);
  CHECK(dds.tile.mma == Mma::Simt);
  CHECK_NOTHROW(validate(dds));
  CHECK(default_spec(small, Op::DDS, false, false, Arch::SM90a).tile == wgmma_tile(64, 256));
  // The deepest ring that fits 227 KiB beside the staged output tile.
  CHECK(wgmma_tile(128, 256).stages == 3);
  CHECK(wgmma_tile(128, 128).stages == 6);
  CHECK(sm90_smem_bytes(128, 128, 6) <= kSm90MaxSharedBytes);
  CHECK(sm90_smem_bytes(128, 128, 7) > kSm90MaxSharedBytes);
}

TEST_CASE("wgmma tiles: bad configurations name the value and the limit") {
  KernelSpec k = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  const KernelSpec good = k;
  k.arch = Arch::SM80;
  expect_error([&] { validate(k); }, {"needs arch sm_90a", "sm_80"});
  k = good;
  k.tile.k = 32;
  expect_error([&] { validate(k); }, {"k = 32", "expected 64"});
  k = good;
  k.tile.warps = 8;
  expect_error([&] { validate(k); }, {"warps = 8", "12"});
  k = good;
  k.tile.m = 256;
  expect_error([&] { validate(k); }, {"m = 256", "64 or 128"});
  k = good;
  k.tile.n = 160;
  expect_error([&] { validate(k); }, {"n = 160", "64, 128, 192 or 256"});
  k.tile.n = 192;  // a 192-column tile must lie within one expert's ffn = 4096 columns
  expect_error([&] { validate(k); }, {"n = 192", "ffn = 4096"});
  // At ffn = 768 it does, crossing block boundaries (B 128: one and a half blocks per tile; B 64: three,
  // with a 64-row ping-pong tile, as a cooperative 64-row tile would split 192 columns into 96s; B 256).
  k.ffn = 768;
  for (int32_t block : {64, 128, 256}) {
    k.block = block;
    k.tile.m = block == 64 ? 64 : 128;
    k.tile.pingpong = block == 64;
    CHECK_NOTHROW(validate(k));
  }
  k.tile.m = 128;
  k.tile.pingpong = false;
  k.op = Op::DSD;  // DSD: n within hidden = 1024
  k.trans_b = false;
  expect_error([&] { validate(k); }, {"n = 192", "hidden = 1024"});
  k.hidden = 768;
  CHECK_NOTHROW(validate(k));
  k.op = Op::DDS;  // DDS: within a block or across whole ones
  k.block = 128;
  expect_error([&] { validate(k); }, {"n = 192", "multiple of the block size 128"});
  k = good;
  k.tile = wgmma_tile(64, 64);  // one 32-column wgmma per warpgroup: not supported
  expect_error([&] { validate(k); }, {"n = 64", "per consumer warpgroup"});
  k = good;
  k.ffn = 128 * 3;
  expect_error([&] { validate(k); }, {"n = 256", "ffn = 384"});
  k = good;
  k.op = Op::DDS;
  k.tile = wgmma_tile(128, 256);
  expect_error([&] { validate(k); }, {"n = 256", "block size 128"});
  k = good;
  k.tile.stages = 4;
  expect_error([&] { validate(k); }, {"4 stages", "232448"});
  k.tile.stages = 1;
  expect_error([&] { validate(k); }, {"stages = 1", "2 to 8"});
}

TEST_CASE("wgmma tile order: the group is validated, named when not 8, part of the key; wgmma only") {
  const KernelSpec good = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  CHECK(good.tile.group == 8);
  CHECK(kernel_name(good) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a");  // unchanged
  std::unordered_set<std::string> names;
  std::unordered_set<KernelSpec> specs;
  for (int g : {1, 2, 4, 8, 16}) {
    KernelSpec k = good;
    k.tile.group = static_cast<uint8_t>(g);
    CHECK_NOTHROW(validate(k));
    names.insert(kernel_name(k));
    specs.insert(k);
  }
  CHECK(names.size() == 5);
  CHECK(specs.size() == 5);
  KernelSpec k = good;
  k.tile.group = 4;
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3g4_sm90a");
  CHECK_FALSE(k == good);
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(good));
  k.epilogue = Epilogue::SiluGrad;
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3g4_dsilu_sm90a");
  for (auto [g, text] : {std::pair{0, "group = 0"}, {3, "group = 3"}, {32, "group = 32"}}) {
    k = good;
    k.tile.group = static_cast<uint8_t>(g);
    expect_error([&] { validate(k); }, {text, "1, 2, 4, 8 or 16"});
  }
  // The other families have no tile order: the default only, and the refusal names the value.
  KernelSpec a = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  CHECK_NOTHROW(validate(a));
  a.tile.group = 4;
  expect_error([&] { validate(a); }, {"group = 4", "wgmma", "mma"});
  KernelSpec simt = spec();
  simt.tile.group = 1;
  expect_error([&] { validate(simt); }, {"group = 1", "simt"});
}

TEST_CASE("wgmma ping-pong schedule: validated, named pp, part of the key, its own shared memory; wgmma only") {
  const KernelSpec good = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  CHECK_FALSE(good.tile.pingpong);
  KernelSpec k = good;
  k.tile = wgmma_tile(128, 128, true);
  CHECK(k.tile.pingpong);
  // Two staging buffers: one stage fewer than the cooperative 128×128 ring (6).
  CHECK(k.tile.stages == 5);
  CHECK(sm90_smem_bytes(128, 128, 5, true) <= kSm90MaxSharedBytes);
  CHECK(sm90_smem_bytes(128, 128, 6, true) > kSm90MaxSharedBytes);
  CHECK(dynamic_shared_bytes(k) == sm90_smem_bytes(128, 128, 5, true));
  CHECK(dynamic_shared_bytes(k) > sm90_smem_bytes(128, 128, 5));
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5pp_sm90a");
  KernelSpec coop = k;
  coop.tile.pingpong = false;
  CHECK_FALSE(k == coop);
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(coop));
  CHECK(kernel_name(coop) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5_sm90a");
  k.tile.group = 4;
  k.epilogue = Epilogue::GeluTanh;
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x128x64s5g4pp_gelu_sm90a");
  // One warpgroup holds the whole tile: n is its wgmma n (64 allowed, unlike cooperative m = 64), and at
  // most 192 accumulators per thread (128 gated).
  CHECK_NOTHROW(validate([&] { KernelSpec x = good; x.tile = wgmma_tile(64, 64, true); return x; }()));
  CHECK_NOTHROW(validate([&] { KernelSpec x = good; x.tile = wgmma_tile(64, 256, true); return x; }()));
  KernelSpec big = good;
  big.tile = wgmma_tile(128, 256);
  big.tile.pingpong = true;
  expect_error([&] { validate(big); }, {"ping-pong", "m·n = 32768", "256 accumulators", "over the 192", "24576"});
  big.tile.n = 160;
  expect_error([&] { validate(big); }, {"ping-pong", "n = 160", "64, 128, 192 or 256"});
  KernelSpec deep = good;
  deep.tile = wgmma_tile(128, 128, true);
  deep.tile.stages = 6;
  expect_error([&] { validate(deep); }, {"ping-pong", "6 stages", "232448"});
  // Defaults: a fused SDD up to hidden 2048 takes the ping-pong 128×128 tile; wider, and every plain
  // product, the cooperative one.
  const KernelSpec fused = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanh);
  CHECK(fused.epilogue == Epilogue::GeluTanh);
  CHECK(fused.tile == wgmma_tile(128, 128, true));
  CHECK(default_spec(preset("mb-46m"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanhGrad).tile.pingpong);
  CHECK_FALSE(default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::Silu).tile.pingpong);
  CHECK_FALSE(default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a).tile.pingpong);
  CHECK(default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM86, Epilogue::GeluTanh).tile.mma == Mma::MmaSync);
  CHECK_THROWS_AS(default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a, Epilogue::GeluTanh),
                  InvalidArgument);
  // The other families have no consumer schedule.
  KernelSpec a = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  a.tile.pingpong = true;
  expect_error([&] { validate(a); }, {"ping-pong", "wgmma", "mma"});
}

TEST_CASE("wgmma clusters: 1 or 2 CTAs, column tiles must pair up, named c2, part of the key; wgmma only") {
  const KernelSpec good = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  CHECK(good.tile.cluster == 1);
  KernelSpec k = good;
  k.tile.cluster = 2;
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3c2_sm90a");
  CHECK_FALSE(k == good);
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(good));
  CHECK(tuning_problem(k) == tuning_problem(good));  // a tile field: the same problem
  k.tile.pingpong = true, k.tile.group = 4;
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3g4ppc2_sm90a");
  for (int c : {0, 3, 4}) {
    k = good;
    k.tile.cluster = static_cast<uint8_t>(c);
    const std::string what = "cluster = " + std::to_string(c);
    expect_error([&] { validate(k); }, {what.c_str(), "1 or 2"});
  }
  // The cluster's CTAs take adjacent column tiles: fine-grained's ffn 1408 holds 11 tiles of 128 (odd),
  // 22 of 64; a DDS with n = B has one per block.
  KernelSpec fg = default_spec(preset("fine-grained"), Op::SDD, false, true, Arch::SM90a);
  fg.tile = wgmma_tile(128, 128);
  fg.tile.cluster = 2;
  expect_error([&] { validate(fg); }, {"cluster = 2", "ffn = 1408", "11 tiles of n = 128"});
  fg.tile = wgmma_tile(128, 64);
  fg.tile.cluster = 2;
  CHECK_NOTHROW(validate(fg));
  KernelSpec dds = default_spec(preset("mb-356m"), Op::DDS, false, false, Arch::SM90a);
  dds.tile = wgmma_tile(128, 128);
  dds.tile.cluster = 2;
  expect_error([&] { validate(dds); }, {"cluster = 2", "the block size = 128", "1 tiles of n = 128"});
  dds.tile = wgmma_tile(128, 64);
  dds.tile.cluster = 2;
  CHECK_NOTHROW(validate(dds));
  for (bool ta : {false, true}) {  // DSD: tiles along hidden
    KernelSpec dsd = default_spec(preset("mb-356m"), Op::DSD, ta, false, Arch::SM90a);
    dsd.tile.cluster = 2;
    CHECK_NOTHROW(validate(dsd));
  }
  // The gather loads A per CTA; the other families run CTAs alone.
  k = good;
  k.tile.cluster = 2, k.gather = true;
  expect_error([&] { validate(k); }, {"cluster = 2", "cannot gather"});
  KernelSpec mma = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  mma.tile.cluster = 2;
  expect_error([&] { validate(mma); }, {"cluster = 2", "wgmma", "mma"});
  KernelSpec simt = spec();
  simt.tile.cluster = 2;
  expect_error([&] { validate(simt); }, {"cluster = 2", "simt"});
}

TEST_CASE("wgmma chunked output staging: plain epilogue, both schedules, divides the chunks, named st, part of the key, "
          "its own shared memory; wgmma only") {
  const KernelSpec good = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  CHECK(good.tile.store_chunks == 0);
  KernelSpec k = good;
  k.tile = wgmma_tile(128, 256, false, false, 2);
  CHECK(k.tile.stages == 4);  // two 16 KiB chunk buffers instead of a 64 KiB tile: one stage more than 3
  CHECK(good.tile.stages == 3);
  CHECK_NOTHROW(validate(k));
  CHECK(dynamic_shared_bytes(k) == sm90_smem_bytes(128, 256, 4, false, false, 2));
  CHECK(dynamic_shared_bytes(k) <= kSm90MaxSharedBytes);
  CHECK(sm90_smem_bytes(128, 256, 5, false, false, 2) > kSm90MaxSharedBytes);
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s4st2_sm90a");
  CHECK_FALSE(k == good);
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(good));
  CHECK(tuning_problem(k) == tuning_problem(good));  // a tile field: the same problem
  CHECK(emit_source(k).find("store_chunks=2") != std::string::npos);
  // A warpgroup's chunks: 4 at 128×256 (1 and 2 divide, 3 does not, 4 is not fewer), 2 at 64×256.
  for (int sc : {3, 4}) {
    k.tile.store_chunks = static_cast<uint8_t>(sc);
    const std::string what = "store_chunks = " + std::to_string(sc);
    expect_error([&] { validate(k); }, {what.c_str(), "4 64×64 output chunks"});
  }
  k.tile = wgmma_tile(64, 256, false, false, 2);
  expect_error([&] { validate(k); }, {"store_chunks = 2", "2 64×64 output chunks"});
  k.tile = wgmma_tile(64, 256, false, false, 1);
  CHECK_NOTHROW(validate(k));
  // Ping-pong: a warpgroup stages its whole m × n tile chunk by chunk (128×192: 6 chunks; one 8 KiB
  // buffer per warpgroup instead of a 48 KiB tile buys 5 stages instead of 3).
  k = good;
  k.ffn = 768;
  k.tile = wgmma_tile(128, 192, true, false, 1);
  CHECK(k.tile.stages == 5);
  CHECK(wgmma_tile(128, 192, true).stages == 3);
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f768_e64_wg128x192x64s5ppst1_sm90a");
  for (int sc : {2, 3}) {
    k.tile = wgmma_tile(128, 192, true, false, sc);
    CHECK(k.tile.stages == 4);
    CHECK_NOTHROW(validate(k));
  }
  k.tile.store_chunks = 4;
  expect_error([&] { validate(k); }, {"store_chunks = 4", "6 64×64 output chunks"});
  // The plain and forward activation epilogues only.
  k = good;
  KernelSpec gelu = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanh);
  gelu.tile = wgmma_tile(128, 256, false, false, 2);
  CHECK_NOTHROW(validate(gelu));  // a forward activation: its pre-activation and activation chunk by chunk
  gelu.tile = wgmma_tile(128, 128, true, false, 2);
  CHECK_NOTHROW(validate(gelu));
  gelu.epilogue = Epilogue::GeluTanhGrad;
  expect_error([&] { validate(gelu); }, {"store_chunks = 2", "gradient epilogue"});
  KernelSpec scatter = default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a);
  scatter.scatter = true;
  scatter.tile = wgmma_tile(128, 256, false, false, 2);
  expect_error([&] { validate(scatter); }, {"store_chunks = 2", "scatter"});
  KernelSpec mma = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  mma.tile.store_chunks = 1;
  expect_error([&] { validate(mma); }, {"store_chunks = 1", "wgmma", "mma"});
}

TEST_CASE("wgmma activation warps: the cooperative activation SDDs only, named aw, part of the key; wgmma only") {
  // The default of a cooperative activation SDD, forward or gradient (the large shapes); not of ping-pong
  // ones (H ≤ 2048), the gated SDD or plain products.
  KernelSpec gelu = default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanh);
  REQUIRE(!gelu.tile.pingpong);
  CHECK(gelu.tile.act_warps);
  CHECK_FALSE(default_spec(preset("mb-46m"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanh).tile.act_warps);
  // H 2048 (fine-grained, ungated): the forward activation cooperative with them (ffn 1408: 128 × 128, six
  // stages); its gradient still ping-pong.
  const KernelSpec fg = default_spec(preset("fine-grained"), Op::SDD, false, true, Arch::SM90a, Epilogue::Silu);
  CHECK(fg.tile.act_warps);
  CHECK_FALSE(fg.tile.pingpong);
  CHECK(fg.tile.n == 128);
  CHECK(default_spec(preset("fine-grained"), Op::SDD, false, true, Arch::SM90a, Epilogue::SiluGrad).tile.pingpong);
  CHECK_FALSE(
      default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::Silu, true).tile.act_warps);
  CHECK_FALSE(default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a).tile.act_warps);
  const KernelSpec dgelu = default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanhGrad);
  CHECK(dgelu.tile.act_warps);
  CHECK(dgelu.tile.stages == 3);
  // The gradient's pre-activation arrives one 128 × 64 chunk at a time into a buffer of its own.
  CHECK(dynamic_shared_bytes(dgelu) == sm90_smem_bytes(128, 256, 3) + 128 * 64 * 2);
  CHECK(dynamic_shared_bytes(dgelu) <= kSm90MaxSharedBytes);
  KernelSpec good = gelu;  // the consumers' own epilogue
  good.tile.act_warps = false;
  CHECK_NOTHROW(validate(good));
  CHECK_NOTHROW(validate(gelu));
  CHECK(kernel_name(gelu) == "dmoe_sdd_nt_bf16_b128_h4096_f14336_e8_wg128x256x64s3aw_gelu_sm90a");
  CHECK(kernel_name(good) == "dmoe_sdd_nt_bf16_b128_h4096_f14336_e8_wg128x256x64s3_gelu_sm90a");
  CHECK(KernelSpecHash{}(gelu) != KernelSpecHash{}(good));
  CHECK(tuning_problem(gelu) == tuning_problem(good));
  CHECK(emit_source(gelu).find("act_warps") != std::string::npos);
  CHECK(emit_source(good).find("act_warps") == std::string::npos);
  CHECK(dynamic_shared_bytes(gelu) == dynamic_shared_bytes(good));  // the same whole-tile staging buffer
  for (Epilogue e : {Epilogue::Silu, Epilogue::Relu, Epilogue::SiluGrad, Epilogue::ReluGrad}) {
    KernelSpec k = gelu;
    k.epilogue = e;
    CHECK_NOTHROW(validate(k));
  }
  // What it refuses, each named: no activation (ungated), ping-pong, chunked staging, the gather (its producer
  // warpgroup loads A); and the other kernel families.
  KernelSpec k = gelu;
  k.epilogue = Epilogue::None;
  expect_error([&] { validate(k); }, {"act_warps", "epilogue none"});
  k = gelu;
  k.tile = wgmma_tile(128, 128, true);
  k.tile.act_warps = true;
  expect_error([&] { validate(k); }, {"act_warps", "ping-pong"});
  k.tile = wgmma_tile(128, 256, false, false, 2);
  k.tile.act_warps = true;
  expect_error([&] { validate(k); }, {"act_warps", "store_chunks = 2"});
  k = gelu;
  k.gather = true;
  expect_error([&] { validate(k); }, {"act_warps", "gather"});
  const KernelSpec gathering = with_gather(gelu);  // the gathering form turns them off
  CHECK(gathering.gather);
  CHECK_FALSE(gathering.tile.act_warps);
  CHECK_NOTHROW(validate(gathering));
  // The gated SDD stages a and g side by side: one more 128 × 128 tile of shared memory, so its 4-stage
  // default ring does not fit, 3 stages do; the bilinear GLU (no activation) too.
  k = gelu;
  k.gated = true;
  k.tile = wgmma_tile(128, 128, false, true);
  CHECK(k.tile.stages == 4);
  k.tile.act_warps = true;
  expect_error([&] { validate(k); }, {"4 stages", "shared memory"});
  CHECK(wgmma_stages(k) == 3);
  k.tile.stages = 3;
  CHECK_NOTHROW(validate(k));
  CHECK(dynamic_shared_bytes(k) == sm90_smem_bytes(128, 128, 3, false, true) + 128 * 128 * 2);
  k.epilogue = Epilogue::None;
  CHECK_NOTHROW(validate(k));
  CHECK_FALSE(default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::Silu, true).tile.act_warps);
  KernelSpec mma = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80, Epilogue::GeluTanh);
  mma.tile.act_warps = true;
  expect_error([&] { validate(mma); }, {"act_warps", "wgmma", "mma"});
}

TEST_CASE("wgmma DDS tiles wider than a block: S only, whole blocks of one expert, no cluster pair") {
  KernelSpec k = default_spec(preset("mb-356m"), Op::DDS, false, false, Arch::SM90a);
  CHECK(k.tile.n == 256);
  CHECK(kernel_name(k) == "dmoe_dds_nn_bf16_b128_h1024_f4096_e64_wg128x256x64s3_sm90a");
  k.trans_b = true;  // Sᵀ: the tile's columns are one block's rows
  expect_error([&] { validate(k); }, {"n = 256", "block size 128", "trans_b false"});
  KernelSpec fg = default_spec(preset("fine-grained"), Op::DDS, false, false, Arch::SM90a);  // ffn 1408 = 11 blocks
  CHECK(fg.tile.n == 128);
  fg.tile = wgmma_tile(128, 256);
  expect_error([&] { validate(fg); }, {"n = 256", "divide ffn = 1408"});
  k = default_spec(preset("mb-356m"), Op::DDS, false, false, Arch::SM90a);
  k.tile.cluster = 2;  // one column tile per two block columns: nothing to pair
  expect_error([&] { validate(k); }, {"cluster = 2", "1 tiles of n = 256"});
  MoeShape b64 = preset("mb-356m");
  b64.block = 64;
  k = default_spec(b64, Op::DDS, true, false, Arch::SM90a);
  k.tile = wgmma_tile(128, 192);
  expect_error([&] { validate(k); }, {"n = 192"});
}

TEST_CASE("gather: SDD with a row-major A on the wgmma kernel only, named, part of the key, not of the tuning problem") {
  KernelSpec k = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  const KernelSpec plain = k;
  k.gather = true;
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_gather_sm90a");
  CHECK(kernel_name(k) != kernel_name(plain));
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(plain));
  CHECK_FALSE(k == plain);
  CHECK(tuning_problem(k) == tuning_problem(plain));  // the gathered SDD takes the plain one's tuned tile
  KernelSpec nn = k;
  nn.trans_b = false;
  CHECK_NOTHROW(validate(nn));
  KernelSpec ta = k;
  ta.trans_a = true;
  expect_error([&] { validate(ta); }, {"gather applies to SDD with a row-major A (trans_a false) only, not sdd tt"});
  KernelSpec dsd = default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a);
  dsd.gather = true;
  expect_error([&] { validate(dsd); }, {"not dsd nn"});
  KernelSpec mma = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  mma.gather = true;
  expect_error([&] { validate(mma); }, {"gather is implemented by the wgmma kernel (sm_90a) only, not the mma kernel"});
  KernelSpec routing = routing_spec(preset("mb-356m"), Op::Gather, Arch::SM90a);
  routing.gather = true;
  expect_error([&] { validate(routing); }, {"gather is not used by gather kernels"});
}

TEST_CASE("scatter: DSD nn on the wgmma kernel only, named _scatter, part of the key, not of the tuning problem") {
  KernelSpec k = default_spec(preset("mb-46m"), Op::DSD, false, false, Arch::SM90a);
  const KernelSpec plain = k;
  k.scatter = true;
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == kernel_name(plain).substr(0, kernel_name(plain).size() - 6) + "_scatter_sm90a");
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(plain));
  CHECK_FALSE(k == plain);
  CHECK(tuning_problem(k) == tuning_problem(plain));  // the scattering DSD takes the plain one's tuned tile
  k.tile.cluster = 2;
  CHECK_NOTHROW(validate(k));
  for (auto [op, ta, tb, what] : {std::tuple{Op::SDD, false, true, "not sdd nt"}, {Op::DSD, true, false, "not dsd tn"},
                                  {Op::DSD, false, true, "not dsd nt"}, {Op::DDS, false, false, "not dds nn"}}) {
    KernelSpec w = default_spec(preset("mb-46m"), op, ta, tb, Arch::SM90a);
    w.scatter = true;
    expect_error([&] { validate(w); }, {"scatter applies to DSD nn", what});
  }
  KernelSpec mma = default_spec(preset("mb-46m"), Op::DSD, false, false, Arch::SM80);
  mma.scatter = true;
  expect_error([&] { validate(mma); }, {"scatter is implemented by the wgmma kernel (sm_90a) only, not the mma kernel"});
  KernelSpec routing = routing_spec(preset("mb-46m"), Op::Scatter, Arch::SM90a);
  routing.scatter = true;
  expect_error([&] { validate(routing); }, {"scatter"});
}

TEST_CASE("gated SDD: a forward SDD on the wgmma kernel, two accumulator sets, named _glu, part of the key and the problem") {
  const MoeShape fg = preset("fine-grained");
  const KernelSpec k = default_spec(fg, Op::SDD, false, true, Arch::SM90a, Epilogue::Silu, true);
  CHECK(k.gated);
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h2048_f1408_e64_wg128x128x64s4_silu_glu_sm90a");
  KernelSpec plain = k;
  plain.gated = false;
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(plain));
  CHECK(tuning_problem(k) != tuning_problem(plain));  // tuned as a problem of its own (sdd_nt+silu+glu)
  CHECK(dynamic_shared_bytes(k) == sm90_smem_bytes(128, 128, 4, false, true));
  CHECK(dynamic_shared_bytes(k) <= kSm90MaxSharedBytes);
  KernelSpec wide = k;
  wide.tile = wgmma_tile(128, 256);
  expect_error([&] { validate(wide); }, {"gated: 256 columns per consumer warpgroup need 256 accumulators"});
  KernelSpec pp = k;
  pp.tile = wgmma_tile(128, 128, true, true);
  expect_error([&] { validate(pp); }, {"(m·n ≤ 8192)"});
  KernelSpec grad = k;
  grad.epilogue = Epilogue::SiluGrad;
  expect_error([&] { validate(grad); }, {"gated applies to SDD with a forward epilogue"});
  CHECK_THROWS_AS(default_spec(fg, Op::SDD, false, true, Arch::SM80, Epilogue::Silu, true), InvalidArgument);
  KernelSpec routing = routing_spec(fg, Op::Glu, Arch::SM90a);
  routing.gated = true;
  expect_error([&] { validate(routing); }, {"gated is not used by glu kernels"});
  // A gated layer on sm_90a: the gated forward SDD, then DSD NN, the plain backward SDD, DSD TN.
  const auto ks = layer_kernels(fg, Arch::SM90a);
  REQUIRE(ks.size() == 4);
  CHECK(ks[0].gated);
  CHECK_FALSE(ks[2].gated);
  CHECK(ks[2].op == Op::SDD);
}

TEST_CASE("epilogues: SDD only, named in the kernel, part of the key") {
  KernelSpec k = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  k.epilogue = Epilogue::GeluTanh;
  CHECK_NOTHROW(validate(k));
  CHECK(kernel_name(k) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_gelu_sm90a");
  KernelSpec g = k;
  g.epilogue = Epilogue::GeluTanhGrad;
  CHECK(kernel_name(g) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_wg128x256x64s3_dgelu_sm90a");
  CHECK(KernelSpecHash{}(k) != KernelSpecHash{}(g));
  CHECK(is_gradient(Epilogue::SiluGrad));
  CHECK_FALSE(is_gradient(Epilogue::Silu));
  CHECK(parse_epilogue("dsilu") == Epilogue::SiluGrad);
  expect_error([] { parse_epilogue("tanh"); }, {"tanh", "gelu"});
  KernelSpec d = default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a);
  d.epilogue = Epilogue::Silu;
  expect_error([&] { validate(d); }, {"epilogue silu applies to SDD only", "dsd"});
  KernelSpec a = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM80);
  a.epilogue = Epilogue::Silu;  // every kernel family fuses the epilogues
  CHECK_NOTHROW(validate(a));
  CHECK(kernel_name(a) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma128x128x32w8s5_silu_sm80");
}

TEST_CASE("sm_80, sm_86 and sm_89 default to 128x128x32 mma.sync tiles over 8 warps, the deepest ring that fits") {
  const MoeShape s = preset("mb-356m");
  for (Arch arch : {Arch::SM80, Arch::SM86, Arch::SM89}) {
    INFO(to_string(arch));
    for (auto [op, ta, tb] : {std::tuple{Op::SDD, false, true}, {Op::DSD, false, false}, {Op::DSD, true, false},
                              {Op::DDS, false, false}, {Op::DDS, true, true}}) {
      const KernelSpec k = default_spec(s, op, ta, tb, arch);
      CHECK(k.tile == TileConfig{128, 128, 32, 8, 5, Mma::MmaSync});
      CHECK_NOTHROW(validate(k));
    }
  }
  const KernelSpec sdd = default_spec(s, Op::SDD, false, true, Arch::SM80);
  CHECK(kernel_name(sdd) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma128x128x32w8s5_sm80");
  CHECK(threads_per_cta(sdd) == 256);
  CHECK(dynamic_shared_bytes(sdd) == sm80_smem_bytes(128, 128, 32, 5));
  CHECK(sm80_smem_bytes(128, 128, 32, 5) == 5 * 256 * 32 * 2);
  // The ring also holds the staged output tile, for every valid tile.
  for (int m : {64, 128})
    for (int n : {64, 128}) CHECK(sm80_smem_bytes(m, n, 32, 2) >= m * n * 2);
  // B = 64: the tile stays within a block where it lives in one (SDD rows and columns, DSD rows, DDS
  // columns) and spans hidden elsewhere.
  MoeShape small = s;
  small.block = 64;
  CHECK(default_spec(small, Op::SDD, false, true, Arch::SM86).tile == TileConfig{64, 64, 32, 8, 5, Mma::MmaSync});
  CHECK(default_spec(small, Op::DSD, false, false, Arch::SM86).tile == TileConfig{64, 128, 32, 8, 5, Mma::MmaSync});
  CHECK(default_spec(small, Op::DDS, false, false, Arch::SM86).tile == TileConfig{128, 64, 32, 8, 5, Mma::MmaSync});
  // hidden = 192: no 128 divides it, so DSD's columns and DDS's rows fall back to 64.
  small.hidden = 192;
  CHECK(default_spec(small, Op::DSD, false, false, Arch::SM89).tile == TileConfig{64, 64, 32, 8, 5, Mma::MmaSync});
  CHECK(default_spec(small, Op::DDS, false, false, Arch::SM89).tile == TileConfig{64, 64, 32, 8, 5, Mma::MmaSync});
  // sm_90a keeps the wgmma default; mma.sync tiles are still valid there.
  CHECK(default_spec(s, Op::SDD, false, true, Arch::SM90a).tile.mma == Mma::Wgmma);
  KernelSpec h = sdd;
  h.arch = Arch::SM90a;
  CHECK_NOTHROW(validate(h));
  CHECK(kernel_name(h) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma128x128x32w8s5_sm90a");
  // The deepest ring (at most 5) under each arch's limit.
  CHECK(mma_sync_tile(128, 128, Arch::SM86).stages == 5);
  CHECK(mma_sync_tile(128, 128, Arch::SM86, 64).stages == 3);
  CHECK(mma_sync_tile(128, 128, Arch::SM89, 64).stages == 3);
  CHECK(mma_sync_tile(128, 128, Arch::SM80, 64).stages == 5);
  CHECK(mma_sync_tile(128, 128, Arch::SM90a, 64).stages == 5);
  CHECK(sm80_smem_bytes(128, 128, 64, 3) <= kSm86MaxSharedBytes);
  CHECK(sm80_smem_bytes(128, 128, 64, 4) > kSm86MaxSharedBytes);
  CHECK(max_shared_bytes(Arch::SM80) == 163 * 1024);
  CHECK(max_shared_bytes(Arch::SM86) == 99 * 1024);
  CHECK(max_shared_bytes(Arch::SM89) == 99 * 1024);
  CHECK(max_shared_bytes(Arch::SM90a) == 227 * 1024);
}

TEST_CASE("mma.sync tiles: bad configurations name the value and the limit") {
  const KernelSpec good = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM86);
  REQUIRE(good.tile.mma == Mma::MmaSync);
  KernelSpec k = good;
  k.tile.m = 32;
  expect_error([&] { validate(k); }, {"mma tile 32x128x32", "m = 32", "64 or 128"});
  k = good;
  k.tile.n = 256;
  expect_error([&] { validate(k); }, {"n = 256", "64 or 128"});
  k = good;
  k.tile.k = 16;
  expect_error([&] { validate(k); }, {"k = 16", "32 or 64"});
  k = good;
  k.tile.warps = 12;
  expect_error([&] { validate(k); }, {"warps = 12", "4 or 8"});
  k = good;
  k.tile.stages = 1;
  expect_error([&] { validate(k); }, {"stages = 1", "2 to 5"});
  k.tile.stages = 6;
  expect_error([&] { validate(k); }, {"stages = 6", "2 to 5"});
  // Shared memory: 4 stages of 128x128x64 need 128 KiB, over sm_86's and sm_89's 99 KiB but within
  // sm_80's 163 KiB and sm_90a's 227 KiB.
  k = good;
  k.tile.k = 64;
  k.tile.stages = 4;
  expect_error([&] { validate(k); }, {"4 stages", "131072", "sm_86 limit 101376"});
  k.arch = Arch::SM89;
  expect_error([&] { validate(k); }, {"131072", "sm_89 limit 101376"});
  k.arch = Arch::SM80;
  CHECK_NOTHROW(validate(k));
  k.tile.stages = 5;
  k.tile.m = k.tile.n = 128;
  CHECK_NOTHROW(validate(k));  // 160 KiB
  k.arch = Arch::SM90a;
  CHECK_NOTHROW(validate(k));
  // The decomposition: SDD m|B and n|B; DSD m|B, n|H; DDS m|H, n|B.
  k = good;
  k.block = 64;
  expect_error([&] { validate(k); }, {"m = 128", "block size = 64"});
  k.tile.m = 64;
  expect_error([&] { validate(k); }, {"n = 128", "block size = 64"});
  k = good;
  k.op = Op::DSD;
  k.hidden = 192;
  expect_error([&] { validate(k); }, {"n = 128", "hidden = 192"});
  k.tile.n = 64;
  CHECK_NOTHROW(validate(k));
  k.block = 64;
  expect_error([&] { validate(k); }, {"m = 128", "block size = 64"});
  k = good;
  k.op = Op::DDS;
  k.hidden = 192;
  expect_error([&] { validate(k); }, {"m = 128", "hidden = 192"});
  k.tile.m = 64;
  CHECK_NOTHROW(validate(k));
  k.block = 64;
  expect_error([&] { validate(k); }, {"n = 128", "block size = 64"});
  // SDD reduces over hidden in k steps.
  k = good;
  k.hidden = 160;
  k.tile.k = 64;
  expect_error([&] { validate(k); }, {"k = 64", "hidden = 160"});
  k.tile.k = 32;
  CHECK_NOTHROW(validate(k));
}

TEST_CASE("mma is a kernel family of its own: parsed, printed and named apart from SIMT") {
  CHECK(parse_mma("mma") == Mma::MmaSync);
  CHECK(parse_mma("MMA") == Mma::MmaSync);
  CHECK(to_string(Mma::MmaSync) == "mma");
  expect_error([] { parse_mma("hmma"); }, {"hmma", "simt|wgmma|mma"});
  KernelSpec simt = spec();
  simt.arch = Arch::SM80;
  simt.tile = TileConfig{64, 64, 32, 8, 2, Mma::Simt};
  KernelSpec mma = simt;
  mma.tile.mma = Mma::MmaSync;
  CHECK_NOTHROW(validate(mma));
  CHECK(kernel_name(mma) == "dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma64x64x32w8s2_sm80");
  CHECK(kernel_name(mma) != kernel_name(simt));
  CHECK(KernelSpecHash{}(mma) != KernelSpecHash{}(simt));
  CHECK(!(mma == simt));
}

TEST_CASE("routing specs: Glu and GluGrad carry the shape's activation, RouterGrad its dtype") {
  MoeShape s = preset("mixtral-8x7b");  // SiLU, gated
  const KernelSpec glu = routing_spec(s, Op::Glu, Arch::SM90a);
  CHECK(glu.epilogue == Epilogue::Silu);
  CHECK(glu.dtype == DType::BF16);
  CHECK(glu.block == 128);
  CHECK(glu.ffn == 14336);
  CHECK(glu.hidden == 0);
  CHECK(glu.experts == 0);
  CHECK(glu.top_k == 0);
  CHECK(kernel_name(glu) == "dmoe_glu_bf16_b128_f14336_silu_sm90a");
  CHECK(kernel_name(routing_spec(s, Op::GluGrad, Arch::SM80)) == "dmoe_glu_grad_bf16_b128_f14336_silu_sm80");
  s.activation = Activation::None;
  s.dtype = DType::FP16;
  CHECK(kernel_name(routing_spec(s, Op::Glu, Arch::SM90a)) == "dmoe_glu_fp16_b128_f14336_none_sm90a");
  CHECK(kernel_name(routing_spec(s, Op::RouterGrad, Arch::SM90a, 1)) == "dmoe_router_grad_fp16_e8_k2_p1_sm90a");
  s.dtype = DType::BF16;
  CHECK(kernel_name(routing_spec(s, Op::RouterGrad, Arch::SM90a, 1)) == "dmoe_router_grad_bf16_e8_k2_p1_sm90a");
  CHECK(parse_op("glu") == Op::Glu);
  CHECK(parse_op("GLU_GRAD") == Op::GluGrad);
  CHECK(to_string(Op::GluGrad) == "glu_grad");
  for (Activation a : {Activation::None, Activation::GeluTanh, Activation::Silu, Activation::Relu})
    CHECK(to_string(epilogue_of(a)) == to_string(a));

  // Every activation is a distinct kernel; a gradient epilogue, or an activation on another routing
  // kernel, is refused by name.
  std::unordered_set<std::string> names;
  std::unordered_set<KernelSpec> specs;
  for (Op op : {Op::Glu, Op::GluGrad})
    for (Epilogue e : {Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu}) {
      KernelSpec k = glu;
      k.op = op;
      k.epilogue = e;
      CHECK_NOTHROW(validate(k));
      names.insert(kernel_name(k));
      specs.insert(k);
    }
  CHECK(names.size() == 8);
  CHECK(specs.size() == 8);
  KernelSpec bad = glu;
  bad.epilogue = Epilogue::SiluGrad;
  expect_error([&] { validate(bad); }, {"glu", "forward epilogue", "dsilu"});
  bad = glu;
  bad.hidden = 1024;
  expect_error([&] { validate(bad); }, {"hidden is not used by glu"});
  bad = glu;
  bad.ffn = 1000;
  expect_error([&] { validate(bad); }, {"ffn = 1000", "block size 128"});
  KernelSpec scatter = routing_spec(s, Op::Scatter, Arch::SM90a);
  scatter.epilogue = Epilogue::Silu;
  expect_error([&] { validate(scatter); }, {"epilogue is not used by scatter"});
}

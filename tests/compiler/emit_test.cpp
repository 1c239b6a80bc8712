// Emission: deterministic source and key, distinct keys for distinct specs, self-contained templates.
#include <doctest/doctest.h>

#include <set>

#include "dmoe/compiler.hpp"
#include "templates.hpp"

using namespace dmoe;

namespace {

// The SIMT kernel's spec: it compiles for every arch, so each field can vary on its own.
KernelSpec base() {
  MoeShape s = preset("mb-356m");
  KernelSpec k = default_spec(s, Op::SDD, false, true, Arch::SM90a);
  k.tile = TileConfig{64, 64, 32, 8, 1};
  return k;
}

}  // namespace

TEST_CASE("emission is deterministic: same spec, byte-identical source and key") {
  const KernelSpec k = base();
  const std::string a = emit_source(k), b = emit_source(k);
  CHECK(a == b);
  CHECK(cache_key(k) == cache_key(k));
  CHECK(cache_key(k).size() == 32);
  CHECK(a.find("extern \"C\" __global__") != std::string::npos);
  CHECK(a.find(kernel_name(k)) != std::string::npos);
  CHECK(a.find("#include \"dmoe/kernels/product.cuh\"") != std::string::npos);
}

TEST_CASE("every field of the spec changes the source and the key") {
  std::vector<KernelSpec> variants;
  variants.push_back(base());
  auto vary = [&](auto&& change) {
    KernelSpec k = base();
    change(k);
    validate(k);
    variants.push_back(k);
  };
  vary([](KernelSpec& k) { k.op = Op::DSD; });
  vary([](KernelSpec& k) { k.op = Op::DDS; });
  vary([](KernelSpec& k) { k.trans_a = true; });
  vary([](KernelSpec& k) { k.trans_b = false; });
  vary([](KernelSpec& k) { k.dtype = DType::FP16; });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(128, 128); });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(128, 256); });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(128, 128); k.tile.stages = 3; });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(64, 256); });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(128, 128); k.gather = true; });
  vary([](KernelSpec& k) { k.tile = wgmma_tile(128, 128, false, true); k.gated = true; });
  vary([](KernelSpec& k) { k.tile = mma_sync_tile(128, 128, Arch::SM90a); });
  vary([](KernelSpec& k) { k.tile = mma_sync_tile(128, 128, Arch::SM90a); k.tile.stages = 3; });
  vary([](KernelSpec& k) { k.tile = mma_sync_tile(128, 128, Arch::SM90a); k.tile.warps = 4; });
  vary([](KernelSpec& k) { k.tile = mma_sync_tile(128, 128, Arch::SM90a, 64); });
  vary([](KernelSpec& k) { k.tile = mma_sync_tile(64, 128, Arch::SM90a); });
  vary([](KernelSpec& k) { k.tile = TileConfig{64, 64, 32, 8, 2, Mma::MmaSync}; });  // SIMT's m, n, k, warps
  vary([](KernelSpec& k) { k.arch = Arch::SM80; });
  vary([](KernelSpec& k) { k.arch = Arch::SM86; });
  vary([](KernelSpec& k) { k.arch = Arch::SM89; });
  vary([](KernelSpec& k) { k.block = 64; });
  vary([](KernelSpec& k) { k.block = 256; });
  vary([](KernelSpec& k) { k.hidden = 2048; });
  vary([](KernelSpec& k) { k.ffn = 2048; });
  vary([](KernelSpec& k) { k.experts = 8; });
  vary([](KernelSpec& k) { k.tile.m = 32; });
  vary([](KernelSpec& k) { k.tile.n = 128; });
  vary([](KernelSpec& k) { k.tile.k = 64; });
  vary([](KernelSpec& k) { k.tile.warps = 4; });
  std::set<std::string> sources, keys, names;
  for (const KernelSpec& k : variants) {
    sources.insert(emit_source(k));
    keys.insert(cache_key(k));
    names.insert(kernel_name(k));
  }
  CHECK(sources.size() == variants.size());
  CHECK(keys.size() == variants.size());
  CHECK(names.size() == variants.size());
}

TEST_CASE("emission validates the spec first") {
  KernelSpec k = base();
  k.ffn = 1000;
  CHECK_THROWS_AS(emit_source(k), InvalidArgument);
  CHECK_THROWS_AS(cache_key(k), InvalidArgument);
}

TEST_CASE("embedded templates are self-contained: no toolkit headers") {
  // NVRTC gets no include path at all (see compile_options), so a compile also proves this; the check
  // here names the offending header directly.
  const auto templates = detail::embedded_templates();
  REQUIRE(templates.size() >= 4);
  for (const auto& t : templates) {
    INFO(t.name);
    CHECK(t.content.find("#include <cuda") == std::string_view::npos);
    CHECK(t.content.find("#include \"cuda") == std::string_view::npos);
    CHECK(!t.content.empty());
  }
  const std::string_view digest = detail::templates_digest();
  CHECK(digest.size() == 64);
  CHECK(digest.find_first_not_of("0123456789abcdef") == std::string_view::npos);
}

TEST_CASE("compile options are normalized: no paths") {
  for (Arch arch : {Arch::SM80, Arch::SM90a}) {
    KernelSpec k = base();
    k.arch = arch;
    for (const std::string& o : compile_options(k)) {
      INFO(o);
      CHECK(o.find('/') == std::string::npos);
      CHECK(o.find("-I") != 0);
    }
  }
}

TEST_CASE("the wgmma source instantiates the Hopper kernel with its tensor maps as a grid constant") {
  KernelSpec k = base();
  k.tile = wgmma_tile(128, 256);
  const std::string src = emit_source(k);
  CHECK(src.find("#include \"dmoe/kernels/sm90_product.cuh\"") != std::string::npos);
  CHECK(src.find("const __grid_constant__ dmoe::Sm90ProductArgs args") != std::string::npos);
  CHECK(src.find("__launch_bounds__(384, 1)") != std::string::npos);
  CHECK(src.find("dmoe::sm90::product<dmoe::bf16_t, dmoe::kSDD, false, true, 128, 1024, 4096, 64,") != std::string::npos);
}

TEST_CASE("the wgmma group is a template argument after the epilogue, left out at the default 8") {
  KernelSpec k = base();
  k.tile = wgmma_tile(128, 256);
  CHECK(emit_source(k).find("128, 256, 3>(args);") != std::string::npos);
  k.tile.group = 16;
  std::string src = emit_source(k);
  CHECK(src.find("128, 256, 3, 0, 16>(args);") != std::string::npos);
  CHECK(src.find("// wgmma tile=128x256x64 stages=3 group=16 epilogue=none") != std::string::npos);
  k.epilogue = Epilogue::Silu;
  src = emit_source(k);
  CHECK(src.find("128, 256, 3, " + std::to_string(int(Epilogue::Silu)) + ", 16>(args);") != std::string::npos);
}

TEST_CASE("the ping-pong schedule is the wgmma template's last argument, given with the epilogue and group") {
  KernelSpec k = base();
  k.tile = wgmma_tile(128, 128, true);
  std::string src = emit_source(k);
  CHECK(src.find("128, 128, 5, 0, 8, true>(args);") != std::string::npos);
  CHECK(src.find("// wgmma tile=128x128x64 stages=5 schedule=pingpong epilogue=none") != std::string::npos);
  k.tile.group = 1;
  k.epilogue = Epilogue::GeluTanhGrad;
  src = emit_source(k);
  CHECK(src.find("128, 128, 5, " + std::to_string(int(Epilogue::GeluTanhGrad)) + ", 1, true>(args);") !=
        std::string::npos);
}

TEST_CASE("the mma source instantiates the Ampere-class kernel with the plain ProductArgs") {
  KernelSpec k = base();
  k.arch = Arch::SM80;
  k.tile = mma_sync_tile(128, 128, Arch::SM80);
  const std::string src = emit_source(k);
  CHECK(src.find("#include \"dmoe/kernels/sm80_product.cuh\"") != std::string::npos);
  CHECK(src.find("dmoe_sdd_nt_bf16_b128_h1024_f4096_e64_mma128x128x32w8s5_sm80(const dmoe::ProductArgs args)") !=
        std::string::npos);
  // 8 warps: two CTAs per SM (128 registers a thread); 4 warps: one.
  CHECK(src.find("__launch_bounds__(256, 2)") != std::string::npos);
  CHECK(src.find("dmoe::sm80::product<dmoe::bf16_t, dmoe::kSDD, false, true, 128, 1024, 4096, 64,") !=
        std::string::npos);
  CHECK(src.find("128, 128, 32, 8, 5>(args);") != std::string::npos);
  k.tile.warps = 4;
  k.dtype = DType::FP16;
  k.op = Op::DDS;
  k.trans_b = false;
  const std::string four = emit_source(k);
  CHECK(four.find("__launch_bounds__(128, 1)") != std::string::npos);
  CHECK(four.find("dmoe::sm80::product<dmoe::fp16_t, dmoe::kDDS, false, false,") != std::string::npos);
  CHECK(four.find("128, 128, 32, 4, 5>(args);") != std::string::npos);
}

TEST_CASE("the gated experts' kernels instantiate glu.cuh with the dtype, block, ffn and activation") {
  MoeShape s = preset("mixtral-8x7b");
  const std::string glu = emit_source(routing_spec(s, Op::Glu, Arch::SM90a));
  CHECK(glu.find("#include \"dmoe/kernels/glu.cuh\"") != std::string::npos);
  CHECK(glu.find("dmoe_glu_bf16_b128_f14336_silu_sm90a(const dmoe::RoutingArgs args)") != std::string::npos);
  CHECK(glu.find("dmoe::glu_kernel<dmoe::bf16_t, 128, 14336, 2>(args);") != std::string::npos);  // kEpiSilu
  s.activation = Activation::GeluTanh;
  s.dtype = DType::FP16;
  const std::string grad = emit_source(routing_spec(s, Op::GluGrad, Arch::SM80));
  CHECK(grad.find("dmoe::glu_grad_kernel<dmoe::fp16_t, 128, 14336, 1>(args);") != std::string::npos);  // kEpiGelu
  CHECK(grad.find("__launch_bounds__(256)") != std::string::npos);
  const std::string rg = emit_source(routing_spec(s, Op::RouterGrad, Arch::SM90a, 2));
  CHECK(rg.find("dmoe::router_grad_kernel<dmoe::fp16_t, 8, 2, 2>(args);") != std::string::npos);
}

TEST_CASE("routing kernels on sm_90a are programmatic dependents; products and older archs are not") {
  const MoeShape s = preset("mb-46m");
  for (Op op : {Op::Router, Op::Bins, Op::Permute, Op::Topology, Op::Gather, Op::Scatter, Op::ScatterGrad,
                Op::RouterGrad}) {
    const KernelSpec hopper = routing_spec(s, op, Arch::SM90a);
    INFO(kernel_name(hopper));
    CHECK(programmatic_launch(hopper));
    const std::string src = emit_source(hopper);
    // Both before the kernel body: nothing may touch memory before the wait.
    const size_t trigger = src.find("dmoe::ptx::griddep_launch_dependents();");
    const size_t wait = src.find("dmoe::ptx::griddep_wait();");
    const size_t body = src.find("_kernel<");
    REQUIRE(trigger != std::string::npos);
    REQUIRE(wait != std::string::npos);
    CHECK(wait < trigger);  // one kernel ahead at a time, not the whole chain
    CHECK(trigger < body);
    const KernelSpec ampere = routing_spec(s, op, Arch::SM80);
    CHECK_FALSE(programmatic_launch(ampere));
    CHECK(emit_source(ampere).find("griddep") == std::string::npos);
  }
  const KernelSpec product = default_spec(s, Op::SDD, false, true, Arch::SM90a);
  CHECK_FALSE(programmatic_launch(product));
  CHECK(emit_source(product).find("griddep") == std::string::npos);
}

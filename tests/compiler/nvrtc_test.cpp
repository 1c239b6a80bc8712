// NVRTC: real compiles for every arch, ptxas metadata, and readable failures.
#include <doctest/doctest.h>

#include "dmoe/compiler.hpp"
#include "dmoe/routing_args.cuh"

using namespace dmoe;

namespace {

KernelSpec spec(Arch arch, Op op = Op::SDD, bool ta = false, bool tb = true) {
  MoeShape s;
  s.hidden = 256;
  s.ffn = 512;
  s.experts = 4;
  s.block = 128;
  return default_spec(s, op, ta, tb, arch);
}

}  // namespace

TEST_CASE("compiles a cubin for every supported arch, with ptxas metadata") {
  for (Arch arch : {Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90a}) {
    const KernelSpec k = spec(arch);
    INFO(kernel_name(k));
    const CompiledKernel c = compile_source(k, emit_source(k));
    REQUIRE(c.cubin.size() > 4);
    CHECK(c.cubin.compare(0, 4, "\x7f" "ELF") == 0);
    CHECK(c.ptx.find(".entry " + kernel_name(k)) != std::string::npos);
    CHECK(c.ptx.find(".target " + std::string(to_string(arch))) != std::string::npos);
    CHECK(c.meta.registers > 0);
    CHECK(c.meta.registers <= 255);
    CHECK(c.meta.spill_store_bytes == 0);
    CHECK(c.meta.spill_load_bytes == 0);
    CHECK(c.meta.threads == threads_per_cta(k));
    CHECK(c.meta.dynamic_shared_bytes == dynamic_shared_bytes(k));
    CHECK(c.meta.compile_ms > 0);
    CHECK(c.log.find("Used") != std::string::npos);
  }
}

TEST_CASE("a failed compile reports the NVRTC log with the offending source line") {
  const KernelSpec k = spec(Arch::SM90a);
  std::string source = emit_source(k) + "\nint broken = undeclared_identifier_42 + 1;\n";
  try {
    compile_source(k, source);
    FAIL("broken source compiled");
  } catch (const CompileError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(kernel_name(k)) != std::string::npos);
    CHECK(msg.find("kernel.cu(") != std::string::npos);
    CHECK(msg.find("undeclared_identifier_42") != std::string::npos);
    CHECK(msg.find("| int broken = undeclared_identifier_42 + 1;") != std::string::npos);  // quoted line
  }
}

TEST_CASE("an error inside an embedded template quotes the template's line") {
  const KernelSpec k = spec(Arch::SM90a);
  // Instantiate the product with a tile that violates the template's static_assert.
  std::string source = emit_source(k);
  const std::string good = "128, 256, 3>(args)";  // the wgmma tile's m, n, stages
  const size_t pos = source.find(good);
  REQUIRE(pos != std::string::npos);
  source.replace(pos, good.size(), "48, 256, 3>(args)");
  try {
    compile_source(k, source);
    FAIL("invalid instantiation compiled");
  } catch (const CompileError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("dmoe/kernels/sm90_product.cuh(") != std::string::npos);
    CHECK(msg.find("static_assert") != std::string::npos);
  }
}

TEST_CASE("a kernel that spills is refused loudly") {
  const KernelSpec k = spec(Arch::SM90a);
  // 1024 threads × 2 CTAs caps registers at 32; 96 live accumulators cannot fit.
  const std::string source = R"(
extern "C" __global__ void __launch_bounds__(1024, 2) spill(float* p) {
  float a[96];
#pragma unroll
  for (int i = 0; i < 96; ++i) a[i] = p[i * 1024 + threadIdx.x];
#pragma unroll
  for (int r = 0; r < 8; ++r)
#pragma unroll
    for (int i = 0; i < 96; ++i) a[i] = a[i] * a[(i + 7) % 96] + a[(i + 31) % 96];
  float s = 0;
#pragma unroll
  for (int i = 0; i < 96; ++i) s += a[i] * a[95 - i];
  p[threadIdx.x] = s;
}
)";
  try {
    compile_source(k, source);
    FAIL("spilling kernel accepted");
  } catch (const CompileError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("spills") != std::string::npos);
  }
}

TEST_CASE("nvrtc_version names the toolkit") {
  const std::string v = nvrtc_version();
  CHECK(v.find('.') != std::string::npos);
  CHECK(std::stoi(v) >= 11);
}

TEST_CASE("the router compiles without spills at the edges of its launch bounds") {
  // Two CTAs per SM (≤ 128 registers) for the thread-per-token form where K = 1 or E ≤ 32, one CTA for
  // K > 1 at E 33–64 and for the warp form (E > 64): the corners of that rule, with p-norm 2 (the most
  // live values). A spill is refused by the compiler, so compile_source throws on one.
  struct Case {
    int32_t experts, top_k;
    int min_ctas;
  };
  for (const Case c : {Case{64, 1, 2}, Case{33, 1, 2}, Case{32, 32, 2}, Case{8, 8, 2}, Case{33, 2, 1}, Case{64, 8, 1},
                       Case{64, 64, 1}, Case{65, 1, 1}, Case{256, 8, 1}}) {
    MoeShape s;
    s.hidden = 512;
    s.ffn = 512;
    s.experts = c.experts;
    s.top_k = c.top_k;
    const KernelSpec k = routing_spec(s, Op::Router, Arch::SM90a, 2);
    INFO(kernel_name(k));
    const std::string source = emit_source(k);
    CHECK(source.find("__launch_bounds__(" + std::to_string(threads_per_cta(k)) + ", " +
                      std::to_string(c.min_ctas) + ")") != std::string::npos);
    const CompiledKernel compiled = compile_source(k, source);
    CHECK(compiled.meta.spill_store_bytes == 0);
    CHECK(compiled.meta.registers <= 65536 / (c.min_ctas * threads_per_cta(k)));
  }
}

TEST_CASE("RouterGrad: one thread per token up to 64 experts and top-2, without spills; else one warp") {
  // The thread form holds a token's softmax row and its selections in registers: its corners (E 64 with
  // K 2, E not a multiple of 4, E = K) must compile without spilling, kThreadRouterGradTokens threads per
  // CTA; past them (K > 2 or E > 64) the warp form, 256 threads. p-norm 2 carries the most live values.
  struct Case {
    int32_t experts, top_k;
    bool per_thread;
  };
  for (const Case c : {Case{64, 2, true}, Case{64, 1, true}, Case{33, 2, true}, Case{2, 2, true}, Case{1, 1, true},
                       Case{64, 3, false}, Case{64, 8, false}, Case{65, 1, false}, Case{256, 8, false}}) {
    MoeShape s;
    s.hidden = 512;
    s.ffn = 512;
    s.experts = c.experts;
    s.top_k = c.top_k;
    const KernelSpec k = routing_spec(s, Op::RouterGrad, Arch::SM90a, 2);
    INFO(kernel_name(k));
    CHECK(router_grad_per_thread(c.experts, c.top_k) == c.per_thread);
    CHECK(threads_per_cta(k) == (c.per_thread ? kThreadRouterGradTokens : 256));
    const CompiledKernel compiled = compile_source(k, emit_source(k));
    CHECK(compiled.meta.spill_store_bytes == 0);
    CHECK(compiled.meta.spill_load_bytes == 0);
    CHECK(compiled.ptx.find(".local") == std::string::npos);  // no register array indexed at run time
  }
}

TEST_CASE("a routing kernel's PTX carries the grid-dependency instructions on sm_90a only") {
  MoeShape s;
  s.hidden = 512;
  s.ffn = 512;
  s.experts = 8;
  s.top_k = 2;
  for (Arch arch : {Arch::SM90a, Arch::SM80}) {
    const KernelSpec k = routing_spec(s, Op::Bins, arch);
    INFO(kernel_name(k));
    const CompiledKernel c = compile_source(k, emit_source(k));
    const bool hopper = arch == Arch::SM90a;
    CHECK((c.ptx.find("griddepcontrol.launch_dependents;") != std::string::npos) == hopper);
    CHECK((c.ptx.find("griddepcontrol.wait;") != std::string::npos) == hopper);
  }
}

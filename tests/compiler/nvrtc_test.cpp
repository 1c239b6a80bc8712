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

TEST_CASE("a ptxas serialization message is found whatever its reason code or severity") {
  CHECK_FALSE(wgmma_serialization("ptxas info    : Used 168 registers").has_value());
  const std::string info =
      "ptxas info    : 73 bytes gmem\n"
      "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are serialized due "
      "to program dependence on compiler-inserted WG.AR in divergent path in the function 'k'\n"
      "ptxas info    : Used 168 registers";
  const auto line = wgmma_serialization(info);
  REQUIRE(line.has_value());
  CHECK(line->starts_with("ptxas info    : (C7520)"));
  CHECK(line->ends_with("in the function 'k'"));  // the one line, nothing after it
  const auto warning = wgmma_serialization(
      "ptxas warning : (C7511) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
      "insufficient register resources for the wgmma pipeline in the function 'k'");
  REQUIRE(warning.has_value());
  CHECK(warning->find("C7511") != std::string::npos);
}

TEST_CASE("a kernel whose wgmma ptxas serializes is refused loudly") {
  const KernelSpec k = spec(Arch::SM90a);
  // A wgmma issued on a divergent path (a per-thread condition, as product v31's per-row-group test was to
  // ptxas): ptxas serializes the pipeline (C7520 with CUDA 13.0) and files it as "info", not a warning.
  const std::string source = R"(
extern "C" __global__ void __launch_bounds__(128) serialized(float* out, unsigned long long a,
                                                            unsigned long long b, int n) {
  float d[2][4] = {};
  for (int s = 0; s < n; ++s) {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
    for (int m = 0; m < 2; ++m)
      if (threadIdx.x + 64 * m < n)  // per thread: a divergent path to ptxas
        asm volatile("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, %5, 1, 1, 1, 0, 0;"
                     : "+f"(d[m][0]), "+f"(d[m][1]), "+f"(d[m][2]), "+f"(d[m][3])
                     : "l"(a + 2 * s + 64 * m), "l"(b + 2 * s));
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
  for (int m = 0; m < 2; ++m)
    for (int i = 0; i < 4; ++i) out[threadIdx.x * 8 + 4 * m + i] = d[m][i];
}
)";
  try {
    const CompiledKernel c = compile_source(k, source);
    FAIL("a serialized kernel was accepted; ptxas log:\n" << c.log);
  } catch (const CompileError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("serialized") != std::string::npos);
    CHECK(msg.find(kernel_name(k)) != std::string::npos);
  }
}

TEST_CASE("the presets' sm_90a layer kernels carry no ptxas performance notice (C75xx)") {
  // Serialized wgmma is refused outright; the other C75xx notices (C7519: warpgroup.arrive injected to
  // use registers in a wgmma) are a cost ptxas adds silently. None of the kernels a layer runs has one.
  for (const Preset& p : presets())
    for (const KernelSpec& k : layer_kernels(p.shape, Arch::SM90a)) {
      if (!is_product(k.op) || k.tile.mma != Mma::Wgmma) continue;
      const CompiledKernel c = compile_source(k, emit_source(k));
      INFO(p.name << ": " << kernel_name(k) << "\n" << c.log);
      CHECK(c.log.find("(C75") == std::string::npos);
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

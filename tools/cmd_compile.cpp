// `dmoe emit` and `dmoe compile`: generate a kernel's source, or get it compiled through the caches.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>

#include "cli.hpp"
#include "dmoe/compiler.hpp"
#include "json.hpp"

namespace dmoe::cli {
namespace {

using KernelPtr = std::shared_ptr<const CompiledKernel>;

struct CompileFlags {
  SpecFlags spec;
  bool ptx = false;
  bool all = false;
  bool json = false;
};

// Milliseconds rounded to microseconds: enough for a human, and stable-looking in JSON.
double round_ms(double ms) { return std::round(ms * 1000.0) / 1000.0; }

int spills(const KernelMeta& m) { return m.spill_store_bytes + m.spill_load_bytes; }
int shared_bytes(const KernelMeta& m) { return m.static_shared_bytes + m.dynamic_shared_bytes; }

std::string entry_text(const CompiledKernel& k) { return k.dir.empty() ? "(memory only)" : k.dir.string(); }

void print_summary(const CompiledKernel& k, double lookup_ms, size_t batch) {
  const KernelMeta& m = k.meta;
  std::cout << k.name << '\n'
            << fmt::format("  key:       {}\n", k.key) << fmt::format("  cache:     {}\n", k.disk_hit ? "hit" : "miss")
            << fmt::format("  registers: {}\n", m.registers)
            << fmt::format("  spills:    {} bytes (store {}, load {})\n", spills(m), m.spill_store_bytes,
                           m.spill_load_bytes)
            << fmt::format("  shared:    {} bytes (static {}, dynamic {})\n", shared_bytes(m), m.static_shared_bytes,
                           m.dynamic_shared_bytes)
            << fmt::format("  threads:   {}\n", m.threads)
            << fmt::format("  compile:   {:.1f} ms (when the entry was built)\n", m.compile_ms)
            << fmt::format("  lookup:    {:.1f} ms{}\n", lookup_ms,
                           batch > 1 ? fmt::format(" (wall time of all {} kernels in parallel)", batch) : "")
            << fmt::format("  entry:     {}\n", entry_text(k));
}

void print_json(const CompiledKernel& k, double lookup_ms) {
  const KernelMeta& m = k.meta;
  const json::Value line = json::Object{
      {"name", k.name},
      {"key", k.key},
      {"cache", k.disk_hit ? "hit" : "miss"},
      {"registers", m.registers},
      {"spills", spills(m)},
      {"spill_store_bytes", m.spill_store_bytes},
      {"spill_load_bytes", m.spill_load_bytes},
      {"stack_bytes", m.stack_bytes},
      {"shared_bytes", shared_bytes(m)},
      {"static_shared_bytes", m.static_shared_bytes},
      {"dynamic_shared_bytes", m.dynamic_shared_bytes},
      {"threads", m.threads},
      {"compile_ms", round_ms(m.compile_ms)},
      {"lookup_ms", round_ms(lookup_ms)},
      {"dir", k.dir.empty() ? json::Value() : json::Value(k.dir.string())},
  };
  std::cout << line.dump() << '\n';
}

// get_all reports no per-kernel time, so every kernel of a batch carries the batch's wall time.
std::pair<std::vector<KernelPtr>, double> lookup(Compiler& compiler, const std::vector<KernelSpec>& specs) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<KernelPtr> kernels =
      specs.size() == 1 ? std::vector<KernelPtr>{compiler.get(specs[0])} : compiler.get_all(specs);
  const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
  return {std::move(kernels), elapsed.count()};
}

int run_compile(const CompileFlags& flags) {
  const std::vector<KernelSpec> specs = flags.all ? flags.spec.layer_specs() : std::vector{flags.spec.spec()};
  Compiler compiler;
  const auto [kernels, lookup_ms] = lookup(compiler, specs);
  for (size_t i = 0; i < kernels.size(); ++i) {
    if (flags.ptx) {
      std::cout << kernels[i]->ptx;
    } else if (flags.json) {
      print_json(*kernels[i], lookup_ms);
    } else {
      if (i > 0) std::cout << '\n';
      print_summary(*kernels[i], lookup_ms, kernels.size());
    }
  }
  return 0;
}

}  // namespace

Command add_emit_command(CLI::App& root) {
  auto flags = std::make_shared<SpecFlags>();
  CLI::App* app = root.add_subcommand("emit", "Print the CUDA C++ source generated for one kernel");
  flags->add_to(*app);
  return {app, [flags] {
            std::cout << emit_source(flags->spec());
            return 0;
          }};
}

Command add_compile_command(CLI::App& root) {
  auto flags = std::make_shared<CompileFlags>();
  CLI::App* app = root.add_subcommand(
      "compile", "Compile a kernel with NVRTC (or load it from the disk cache, $DMOE_CACHE_DIR) and summarize it");
  flags->spec.add_to(*app);
  CLI::Option* ptx = app->add_flag("--ptx", flags->ptx, "Print the PTX instead of the summary");
  app->add_flag("--all", flags->all,
                "Compile, in parallel, every kernel a layer of the shape needs (ignores --op, --trans)");
  app->add_flag("--json", flags->json,
                "Print one JSON object per kernel and line: name, key, cache, registers, spills, shared_bytes, "
                "threads, compile_ms, lookup_ms, dir")
      ->excludes(ptx);
  return {app, [flags] { return run_compile(*flags); }};
}

}  // namespace dmoe::cli

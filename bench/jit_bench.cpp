// jit_bench — what the JIT costs: a cold compile, a warm disk-cache load, an in-memory hit.
// Prints a table and, with --json, one JSON object. Runs without a GPU (compiler side only); with one it
// also times loading the cubin into the context and the runtime's KernelCache hit.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "dmoe/compiler.hpp"
#include "dmoe/driver.hpp"
#include "dmoe/kernel_cache.hpp"

using namespace dmoe;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Distinct specs: a layer's three products over several hidden sizes, so every compile is cold.
std::vector<KernelSpec> specs(int n, Arch arch) {
  std::vector<KernelSpec> out;
  for (int i = 0; int(out.size()) < n; ++i) {
    MoeShape s;
    s.hidden = 1024 + 64 * i;
    s.ffn = 4096;
    s.experts = 64;
    for (const KernelSpec& k : layer_kernels(s, arch)) out.push_back(k);
  }
  out.resize(n);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  int n = 12;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "-n") && i + 1 < argc) n = std::max(3, std::atoi(argv[++i]));
    else {
      fmt::print(stderr, "usage: jit_bench [--json] [-n KERNELS]\n");
      return 2;
    }
  }
  const std::string reason = gpu_unavailable_reason();
  std::unique_ptr<Device> dev;
  if (reason.empty()) dev = std::make_unique<Device>(0);
  const Arch arch = dev ? device_arch(dev->properties()) : Arch::SM90a;
  const auto root = std::filesystem::temp_directory_path() /
                    fmt::format("dmoe-jit-bench-{}", std::random_device{}());
  const std::vector<KernelSpec> ks = specs(n, arch);

  // 1. Cold: empty cache directory, one fresh compile per spec. The first also pays NVRTC's start-up.
  std::vector<double> cold;
  double first = 0;
  {
    Compiler c({root});
    for (size_t i = 0; i < ks.size(); ++i) {
      const auto t0 = Clock::now();
      c.get(ks[i]);
      (i == 0 ? first : cold.emplace_back()) = ms_since(t0);
    }
  }
  // 2. Warm disk: a new compiler over the same directory (as a new process would see it).
  std::vector<double> disk, disk_load;
  {
    Compiler c({root});
    for (const KernelSpec& k : ks) {
      const auto t0 = Clock::now();
      auto got = c.get(k);
      disk.push_back(ms_since(t0));
      if (!got->disk_hit) fmt::print(stderr, "jit_bench: expected a disk hit for {}\n", got->name);
    }
  }
  // 2b. With a GPU: disk hit all the way to a loaded function (cuModuleLoadData included).
  if (dev) {
    Compiler c({root});
    KernelCache cache(*dev, c);
    for (const KernelSpec& k : ks) {
      const auto t0 = Clock::now();
      cache.get(k);
      disk_load.push_back(ms_since(t0));
    }
  }
  // 3. In-memory hit: the runtime's KernelCache with a GPU, else the compiler's memory cache.
  constexpr int kHits = 1'000'000;
  double hit_ns = 0;
  {
    Compiler c({root});
    std::unique_ptr<KernelCache> cache;
    if (dev) cache = std::make_unique<KernelCache>(*dev, c);
    for (const KernelSpec& k : ks) dev ? (void)cache->get(k) : (void)c.get(k);
    const auto t0 = Clock::now();
    uintptr_t sink = 0;
    for (int i = 0; i < kHits; ++i) {
      const KernelSpec& k = ks[i % ks.size()];
      sink += dev ? reinterpret_cast<uintptr_t>(cache->get(k).function) : reinterpret_cast<uintptr_t>(c.get(k).get());
    }
    hit_ns = ms_since(t0) * 1e6 / kHits;
    if (sink == 1) fmt::print("");
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);

  const std::string where = dev ? dev->properties().name : "no GPU (" + reason + ")";
  const double cold_med = median(cold), disk_med = median(disk), load_med = median(disk_load);
  fmt::print("jit_bench: {} kernels for {} on {}\n", ks.size(), to_string(arch), where);
  fmt::print("{:<44} {:>10} {:>10}\n", "measure", "value", "target");
  fmt::print("{:<44} {:>8.1f}ms {:>10}\n", "first compile in process (NVRTC start-up)", first, "");
  fmt::print("{:<44} {:>8.1f}ms {:>10}\n", "cold compile, median", cold_med, "<= 150ms");
  fmt::print("{:<44} {:>8.3f}ms {:>10}\n", "disk hit (read + verify), median", disk_med, "<= 5ms");
  if (dev) fmt::print("{:<44} {:>8.3f}ms {:>10}\n", "disk hit + cuModuleLoadData, median", load_med, "<= 5ms");
  fmt::print("{:<44} {:>8.1f}ns {:>10}\n", dev ? "KernelCache hit (in memory)" : "Compiler hit (in memory)",
             hit_ns, "<= 1000ns");
  if (json)
    fmt::print("{{\"device\": \"{}\", \"arch\": \"{}\", \"kernels\": {}, \"first_compile_ms\": {:.3f}, "
               "\"cold_compile_ms\": {:.3f}, \"disk_hit_ms\": {:.4f}, \"disk_hit_load_ms\": {:.4f}, "
               "\"memory_hit_ns\": {:.2f}}}\n",
               dev ? dev->properties().name : "none", to_string(arch), ks.size(), first, cold_med, disk_med,
               load_med, hit_ns);
  return 0;
}

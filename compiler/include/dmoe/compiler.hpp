// dmoe/compiler.hpp — the JIT: KernelSpec → CUDA C++ → NVRTC → cubin, cached in memory and on disk.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dmoe/disk_cache.hpp"
#include "dmoe/spec.hpp"

namespace dmoe {

// NVRTC rejected a program, or ptxas produced a kernel dmoe refuses to run (spills, serialized wgmma).
// what() carries the compiler log with the offending generated source lines quoted.
struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What ptxas reported about the kernel (parsed from its verbose output) and how long compiling took.
struct KernelMeta {
  int registers = 0;
  int spill_store_bytes = 0;
  int spill_load_bytes = 0;
  int stack_bytes = 0;
  int static_shared_bytes = 0;
  int dynamic_shared_bytes = 0;  // what the launcher requests
  int threads = 0;
  bool wgmma_serialized = false;  // ptxas said it serialized the wgmma (any reason code: C7510, C7511, C7520, ...)
  double compile_ms = 0;          // NVRTC + ptxas, at the time the entry was built
};

struct CompiledKernel {
  KernelSpec spec;
  std::string name;  // the extern "C" entry point, kernel_name(spec)
  std::string key;   // disk-cache key (32 hex chars)
  std::string source;
  std::string cubin;
  std::string ptx;
  std::string log;   // ptxas output
  KernelMeta meta;
  bool disk_hit = false;       // loaded from the disk cache rather than compiled in this process
  std::filesystem::path dir;   // the cache entry, empty when memory-only
};

// The generated translation unit for a spec: a few lines instantiating one template. Deterministic.
std::string emit_source(const KernelSpec&);

// NVRTC options used for a spec, normalized (no paths): part of the cache key and of meta.json.
std::vector<std::string> compile_options(const KernelSpec&);

// Disk-cache key: digest of the schema and dmoe versions, the emitted source, the embedded templates,
// the options, the NVRTC version and the arch.
std::string cache_key(const KernelSpec&);

// "13.0"
std::string nvrtc_version();

// Compiles source for arch with NVRTC. Throws CompileError.
CompiledKernel compile_source(const KernelSpec&, const std::string& source);

// The line of a ptxas log that says it serialized a kernel's wgmma instructions, whatever its reason code;
// nullopt if none does. compile_source refuses such a kernel, and the cache does not trust an entry whose
// stored log says so.
std::optional<std::string> wgmma_serialization(std::string_view ptxas_log);

struct CompilerOptions {
  std::filesystem::path cache_dir;  // empty: DiskCache::default_root()
  uint64_t cache_max_bytes = 0;     // 0: DiskCache::default_max_bytes()
  bool use_disk = true;             // false: memory only (also forced by DMOE_CACHE_DISABLE=1)
};

// Thread-safe. get() returns the same object for the same spec for the Compiler's lifetime; concurrent
// requests for one spec compile it once.
class Compiler {
 public:
  explicit Compiler(CompilerOptions = {});
  ~Compiler();
  Compiler(const Compiler&) = delete;
  Compiler& operator=(const Compiler&) = delete;

  std::shared_ptr<const CompiledKernel> get(const KernelSpec&);
  // Compiles (or loads) all specs on up to `jobs` threads (0: hardware concurrency). Results follow the
  // input order. The first failure is rethrown after all jobs finish.
  std::vector<std::shared_ptr<const CompiledKernel>> get_all(std::span<const KernelSpec>, int jobs = 0);

  DiskCache* disk();  // nullptr when memory-only
  // The process-wide compiler the runtime uses by default.
  static Compiler& global();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dmoe

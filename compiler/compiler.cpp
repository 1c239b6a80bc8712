// The compiler facade: memory cache → disk cache → NVRTC, and the cache key.
#include "dmoe/compiler.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <future>
#include <iostream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "digest.hpp"
#include "dmoe_version.hpp"
#include "json.hpp"
#include "templates.hpp"

namespace dmoe {
namespace {

// Bump when the layout of cache entries or the meaning of a key field changes.
constexpr std::string_view kSchemaVersion = "1";

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + '\n';
  return out;
}

std::string key_of(const KernelSpec& spec, const std::string& source) {
  // No environment variable changes code generation today; any that does must join the key here.
  static const std::string nvrtc = nvrtc_version();
  return KeyBuilder()
      .add("schema", kSchemaVersion)
      .add("dmoe", DMOE_VERSION)
      .add("source", source)
      .add("templates", detail::templates_digest())
      .add("options", joined(compile_options(spec)))
      .add("nvrtc", nvrtc)
      .add("arch", to_string(spec.arch))
      .key();
}

json::Value spec_json(const KernelSpec& k) {
  return json::Object{
      {"op", to_string(k.op)},
      {"trans", fmt::format("{}{}", k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n')},
      {"dtype", to_string(k.dtype)},
      {"block", k.block},
      {"hidden", k.hidden},
      {"ffn", k.ffn},
      {"experts", k.experts},
      {"tile", json::Object{{"m", k.tile.m}, {"n", k.tile.n}, {"k", k.tile.k}, {"warps", k.tile.warps},
                            {"stages", k.tile.stages}, {"group", k.tile.group}, {"cluster", k.tile.cluster},
                            {"store_chunks", k.tile.store_chunks}, {"act_warps", k.tile.act_warps}}},
      {"epilogue", to_string(k.epilogue)},
      {"arch", to_string(k.arch)},
  };
}

std::string meta_json(const CompiledKernel& k) {
  json::Array options;
  for (const auto& o : compile_options(k.spec)) options.emplace_back(o);
  const std::time_t now = std::time(nullptr);
  char created[32];
  std::strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const json::Value meta = json::Object{
      {"name", k.name},
      {"key", k.key},
      {"spec", spec_json(k.spec)},
      {"options", options},
      {"versions", json::Object{{"schema", kSchemaVersion}, {"dmoe", DMOE_VERSION}, {"nvrtc", nvrtc_version()},
                                {"templates", detail::templates_digest()}}},
      {"registers", k.meta.registers},
      {"spill_store_bytes", k.meta.spill_store_bytes},
      {"spill_load_bytes", k.meta.spill_load_bytes},
      {"stack_bytes", k.meta.stack_bytes},
      {"static_shared_bytes", k.meta.static_shared_bytes},
      {"dynamic_shared_bytes", k.meta.dynamic_shared_bytes},
      {"threads", k.meta.threads},
      {"wgmma_serialized", k.meta.wgmma_serialized},
      {"compile_ms", k.meta.compile_ms},
      {"created", std::string(created)},
      {"ptxas_log", k.log},
  };
  return meta.dump(2);
}

// Rebuilds the kernel from a verified cache entry; nullopt if its metadata does not describe this spec.
std::optional<CompiledKernel> from_entry(const KernelSpec& spec, CacheEntry&& e) {
  try {
    const json::Value meta = json::parse(e.meta_json);
    CompiledKernel k;
    k.spec = spec;
    k.name = meta["name"].get_string();
    if (k.name != kernel_name(spec)) return std::nullopt;
    k.key = e.key;
    k.source = std::move(e.source);
    k.cubin = std::move(e.cubin);
    k.ptx = std::move(e.ptx);
    k.log = meta["ptxas_log"].get_string();
    k.meta.registers = int(meta["registers"].get_int());
    k.meta.spill_store_bytes = int(meta["spill_store_bytes"].get_int());
    k.meta.spill_load_bytes = int(meta["spill_load_bytes"].get_int());
    k.meta.stack_bytes = int(meta["stack_bytes"].get_int());
    k.meta.static_shared_bytes = int(meta["static_shared_bytes"].get_int());
    k.meta.dynamic_shared_bytes = int(meta["dynamic_shared_bytes"].get_int());
    k.meta.threads = int(meta["threads"].get_int());
    // Re-read from the log too: an entry stored before dmoe knew a reason code must not pass.
    k.meta.wgmma_serialized = meta["wgmma_serialized"].get_bool() || wgmma_serialization(k.log).has_value();
    k.meta.compile_ms = meta["compile_ms"].get_double();
    k.disk_hit = true;
    k.dir = std::move(e.dir);
    return k;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool disk_disabled_by_env() {
  const char* v = std::getenv("DMOE_CACHE_DISABLE");
  return v && std::string_view(v) != "" && std::string_view(v) != "0";
}

}  // namespace

std::string cache_key(const KernelSpec& spec) { return key_of(spec, emit_source(spec)); }

struct Compiler::State {
  CompilerOptions options;
  std::unique_ptr<DiskCache> disk;
  std::mutex mutex;
  std::unordered_map<KernelSpec, std::shared_future<std::shared_ptr<const CompiledKernel>>> kernels;

  std::shared_ptr<const CompiledKernel> build(const KernelSpec& spec) {
    const std::string source = emit_source(spec);
    const std::string key = key_of(spec, source);
    if (disk) {
      bool corrupt = false;
      if (auto entry = disk->load(key, &corrupt)) {
        if (auto k = from_entry(spec, std::move(*entry))) {
          // The same source compiles the same way: refuse it as compile_source would, without recompiling.
          if (k->meta.wgmma_serialized)
            throw CompileError(fmt::format("{}: ptxas serialized its wgmma ({}; from the cache entry {}); the "
                                           "kernel would run far below its speed, so it is refused",
                                           k->name, wgmma_serialization(k->log).value_or("flagged"), key));
          return std::make_shared<const CompiledKernel>(std::move(*k));
        }
        corrupt = true;
      }
      if (corrupt)
        std::cerr << fmt::format("dmoe: warning: cache entry {} for {} was corrupt; recompiling\n", key,
                                 kernel_name(spec));
    }
    CompiledKernel k = compile_source(spec, source);
    k.key = key;
    if (disk && disk->store(key, k.source, k.cubin, k.ptx, meta_json(k))) k.dir = disk->root() / key;
    return std::make_shared<const CompiledKernel>(std::move(k));
  }
};

Compiler::Compiler(CompilerOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  if (state_->options.use_disk && !disk_disabled_by_env())
    state_->disk = std::make_unique<DiskCache>(state_->options.cache_dir, state_->options.cache_max_bytes);
}

Compiler::~Compiler() = default;

DiskCache* Compiler::disk() { return state_->disk.get(); }

std::shared_ptr<const CompiledKernel> Compiler::get(const KernelSpec& spec) {
  std::promise<std::shared_ptr<const CompiledKernel>> promise;
  std::shared_future<std::shared_ptr<const CompiledKernel>> future;
  bool owner = false;
  {
    std::lock_guard lock(state_->mutex);
    auto [it, inserted] = state_->kernels.try_emplace(spec);
    if (inserted) it->second = promise.get_future().share();
    owner = inserted;
    future = it->second;
  }
  if (!owner) return future.get();  // built, or being built by another thread
  try {
    auto k = state_->build(spec);
    promise.set_value(k);
    return k;
  } catch (...) {
    promise.set_exception(std::current_exception());
    std::lock_guard lock(state_->mutex);
    state_->kernels.erase(spec);  // a later request retries rather than replaying the failure forever
    throw;
  }
}

std::vector<std::shared_ptr<const CompiledKernel>> Compiler::get_all(std::span<const KernelSpec> specs, int jobs) {
  std::vector<std::shared_ptr<const CompiledKernel>> out(specs.size());
  std::vector<std::exception_ptr> errors(specs.size());
  const int n = jobs > 0 ? jobs : std::max(1u, std::thread::hardware_concurrency());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      try {
        out[i] = get(specs[i]);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < std::min<int>(n, int(specs.size())); ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

Compiler& Compiler::global() {
  static Compiler compiler;
  return compiler;
}

}  // namespace dmoe

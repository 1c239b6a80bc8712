#include "dmoe/kernel_cache.hpp"

#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <fmt/format.h>

namespace dmoe {

Arch device_arch(const DeviceProperties& p) {
  const int cc = p.cc_major * 10 + p.cc_minor;
  switch (cc) {
    case 80: return Arch::SM80;
    case 86: return Arch::SM86;
    case 89: return Arch::SM89;
    case 90: return Arch::SM90a;
    default:
      throw InvalidArgument(fmt::format("{} has compute capability {}.{}; dmoe targets sm_80, sm_86, sm_89 and sm_90a",
                                        p.name, p.cc_major, p.cc_minor));
  }
}

struct KernelCache::State {
  struct Entry {
    std::unique_ptr<Module> module;
    LoadedFunction function;
  };
  std::shared_mutex mutex;
  // Entries are never erased, so references handed out stay valid for the cache's lifetime.
  std::unordered_map<KernelSpec, std::unique_ptr<Entry>> loaded;
};

KernelCache::KernelCache(const Device& device, Compiler& compiler)
    : device_(device), compiler_(compiler), state_(std::make_unique<State>()) {}

KernelCache::~KernelCache() = default;

const LoadedFunction& KernelCache::get(const KernelSpec& spec) {
  {
    std::shared_lock lock(state_->mutex);
    if (auto it = state_->loaded.find(spec); it != state_->loaded.end()) return it->second->function;
  }
  return load(spec);
}

const LoadedFunction& KernelCache::load(const KernelSpec& spec) {
  std::shared_ptr<const CompiledKernel> k = compiler_.get(spec);  // outside the lock: may compile
  std::unique_lock lock(state_->mutex);
  if (auto it = state_->loaded.find(spec); it != state_->loaded.end()) return it->second->function;
  auto entry = std::make_unique<State::Entry>();
  entry->module = std::make_unique<Module>(device_, k->cubin.data(), k->cubin.size());
  entry->function = entry->module->function(k->name.c_str(), k->meta.dynamic_shared_bytes);
  entry->function.programmatic = programmatic_launch(spec);
  return state_->loaded.emplace(spec, std::move(entry)).first->second->function;
}

void KernelCache::warm_up(std::span<const KernelSpec> specs, int jobs) {
  compiler_.get_all(specs, jobs);
  for (const KernelSpec& s : specs) get(s);
}

}  // namespace dmoe

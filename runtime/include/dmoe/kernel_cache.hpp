// dmoe/kernel_cache.hpp — spec → kernel loaded on a device. The hot path of every launch.
#pragma once

#include <memory>

#include "dmoe/compiler.hpp"
#include "dmoe/driver.hpp"

namespace dmoe {

// The compile target for a device: sm_80, sm_86, sm_89 or sm_90a (Hopper always gets its "a" features).
// Throws InvalidArgument naming the compute capability when dmoe has no target for it.
Arch device_arch(const DeviceProperties&);

// Loaded kernels of one device. A hit is one hash-map lookup on the KernelSpec under a shared lock: no
// source generation, formatting or hashing of source. A miss asks the Compiler (memory, then disk, then
// NVRTC), loads the cubin and raises the function's shared-memory limit once.
class KernelCache {
 public:
  explicit KernelCache(const Device&, Compiler& = Compiler::global());
  ~KernelCache();
  KernelCache(const KernelCache&) = delete;
  KernelCache& operator=(const KernelCache&) = delete;

  const LoadedFunction& get(const KernelSpec&);
  // Compiles every spec in parallel, then loads each: a layer's warm-up.
  void warm_up(std::span<const KernelSpec>, int jobs = 0);

  const Device& device() const { return device_; }
  Compiler& compiler() { return compiler_; }

 private:
  const LoadedFunction& load(const KernelSpec&);
  struct State;
  const Device& device_;
  Compiler& compiler_;
  std::unique_ptr<State> state_;
};

}  // namespace dmoe

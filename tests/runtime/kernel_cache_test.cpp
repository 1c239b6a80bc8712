// The runtime's kernel cache on a GPU: load once, hit after, warm-up, disk hits across compilers.
#include <doctest/doctest.h>

#include "dmoe/kernel_cache.hpp"
#include "../compiler/test_dirs.hpp"

using namespace dmoe;

TEST_CASE("device_arch maps the GPU to a compile target") {
  Device dev(0);
  const Arch arch = device_arch(dev.properties());
  MESSAGE(dev.properties().name << " → " << to_string(arch));
  CHECK(arch_number(arch) == dev.properties().cc_major * 10 + dev.properties().cc_minor);
  DeviceProperties fake = dev.properties();
  fake.cc_major = 7, fake.cc_minor = 5;
  CHECK_THROWS_WITH_AS(device_arch(fake), doctest::Contains("7.5"), InvalidArgument);
}

TEST_CASE("KernelCache: a miss loads the cubin once, hits return the same function") {
  test::TempDir dir;
  Device dev(0);
  Compiler compiler({dir.path});
  KernelCache cache(dev, compiler);
  const KernelSpec k = default_spec(preset("tiny"), Op::SDD, false, true, device_arch(dev.properties()));
  const LoadedFunction& f1 = cache.get(k);
  const LoadedFunction& f2 = cache.get(k);
  CHECK(&f1 == &f2);
  CHECK(f1.function != nullptr);
  CHECK(f1.registers > 0);
  CHECK(f1.local_bytes == 0);
  CHECK(f1.dynamic_shared_bytes == dynamic_shared_bytes(k));
  CHECK(f1.max_threads >= threads_per_cta(k));
  CHECK_FALSE(f1.programmatic);  // products launch plainly
  const KernelSpec r = routing_spec(preset("tiny"), Op::Router, device_arch(dev.properties()));
  CHECK(cache.get(r).programmatic == (device_arch(dev.properties()) == Arch::SM90a));
}

TEST_CASE("KernelCache: warm-up of a layer, then loads from the disk cache in a fresh compiler") {
  test::TempDir dir;
  Device dev(0);
  const auto specs = layer_kernels(preset("mb-356m"), device_arch(dev.properties()));
  {
    Compiler compiler({dir.path});
    KernelCache cache(dev, compiler);
    cache.warm_up(specs);
    for (const auto& k : specs) CHECK_FALSE(compiler.get(k)->disk_hit);
  }
  Compiler compiler({dir.path});
  KernelCache cache(dev, compiler);
  for (const auto& k : specs) {
    CHECK(cache.get(k).function != nullptr);
    CHECK(compiler.get(k)->disk_hit);
  }
}

TEST_CASE("KernelCache: a large dynamic shared-memory request is raised once at load") {
  test::TempDir dir;
  Device dev(0);
  Compiler compiler({dir.path});
  KernelCache cache(dev, compiler);
  KernelSpec k = default_spec(preset("tiny"), Op::DSD, false, false, device_arch(dev.properties()));
  k.tile = TileConfig{128, 128, 64, 8, 1};  // 64 × (129 + 129) × 4 = 66 KB of dynamic shared memory
  REQUIRE(dynamic_shared_bytes(k) > 48 * 1024);
  CHECK(cache.get(k).dynamic_shared_bytes == dynamic_shared_bytes(k));
}

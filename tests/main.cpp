// Shared doctest main. GPU test programs skip as a whole, visibly, when no GPU is usable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "dmoe/driver.hpp"

int main(int argc, char** argv) {
#ifdef DMOE_GPU_TEST
  if (std::string reason = dmoe::gpu_unavailable_reason(); !reason.empty()) {
    std::printf("SKIP: GPU tests not run: %s\n", reason.c_str());
    return 77;  // Meson's exit code for a skipped test
  }
#endif
  doctest::Context context(argc, argv);
  return context.run();
}

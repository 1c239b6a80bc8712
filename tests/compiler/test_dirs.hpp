// A fresh temporary directory per test, under $DMOE_TEST_TMP when Meson sets it.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace dmoe::test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    const char* base = std::getenv("DMOE_TEST_TMP");
    std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
    path = root / ("dmoe-test-" + std::to_string(std::random_device{}()) + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace dmoe::test

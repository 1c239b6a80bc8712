// Pieces the GPU benchmarks share: random operands, the topology on the device, medians.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "dmoe/driver.hpp"
#include "dmoe/reference.hpp"

namespace dmoe::bench {

// A product's short name in tables: "sdd_nt", "sdd_nt+gelu", "sdd_nt+silu+glu", "dsd_nn scatter".
inline std::string product_label(const KernelSpec& k) {
  return fmt::format("{}_{}{}{}{}{}", to_string(k.op), k.trans_a ? 't' : 'n', k.trans_b ? 't' : 'n',
                     k.epilogue == Epilogue::None ? "" : fmt::format("+{}", to_string(k.epilogue)),
                     k.gated ? "+glu" : "", k.scatter ? " scatter" : "");
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// splitmix64 of a counter: any range of draws is generated independently, so threads split the work
// (tens of GiB per run).
inline uint64_t splitmix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 24-bit integer · 2^−23 − 1 is exact in fp32; truncating to bf16 rounds toward zero, inside [−1, 1).
inline uint16_t uniform_bf16(uint64_t bits) {
  return uint16_t(std::bit_cast<uint32_t>(float(bits & 0xffffff) * 0x1p-23f - 1.0f) >> 16);
}

// Uniform in [−1, 1), two values per draw.
inline void fill_random(const Device& dev, void* dst, int64_t bytes, uint64_t seed) {
  constexpr int64_t kChunk = int64_t{64} << 20;
  const int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<uint16_t> host(std::min(bytes, kChunk) / 2);
  for (int64_t offset = 0; offset < bytes; offset += kChunk) {
    const int64_t n = std::min(bytes - offset, kChunk) / 2, draws = (n + 1) / 2, first = offset / 4;
    {
      std::vector<std::jthread> pool;
      for (int64_t t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          for (int64_t d = draws * t / threads; d < draws * (t + 1) / threads; ++d) {
            const uint64_t z = splitmix(seed + uint64_t(first + d + 1) * 0x9e3779b97f4a7c15ULL);
            host[2 * d] = uniform_bf16(z);
            if (2 * d + 1 < n) host[2 * d + 1] = uniform_bf16(z >> 32);
          }
        });
    }
    dev.copy_to_device(static_cast<char*>(dst) + offset, host.data(), n * 2);
  }
}

// The topology on the device: its seven arrays and the block_rows scalar.
struct DeviceTopology {
  std::vector<DeviceBuffer> arrays;
  Topology view{};

  DeviceTopology(const Device& dev, const reference::HostTopology& t) {
    auto put = [&](std::span<const int32_t> v) {
      arrays.emplace_back(dev, v.size_bytes());
      dev.copy_to_device(arrays.back().get(), v.data(), v.size_bytes());
      return static_cast<const int32_t*>(arrays.back().get());
    };
    view.row_indices = put(t.row_indices);
    view.column_indices = put(t.column_indices);
    view.offsets = put(t.offsets);
    view.column_indices_t = put(t.column_indices_t);
    view.offsets_t = put(t.offsets_t);
    view.block_offsets_t = put(t.block_offsets_t);
    view.block_rows = put(std::span(&t.block_rows, 1));
  }
};


constexpr double kZipfS = 1.0;

// Tokens per expert, summing to T·K. Zipf: each token picks K distinct experts, expert e with weight
// (e + 1)^−s; a fixed seed, so every run measures the same skew.
inline std::vector<int64_t> expert_counts(int64_t tokens, int64_t top_k, int64_t experts, bool zipf) {
  const int64_t total = tokens * top_k;
  std::vector<int64_t> counts(experts, zipf ? 0 : total / experts);
  if (!zipf) {
    for (int64_t e = 0; e < total % experts; ++e) ++counts[e];
    return counts;
  }
  std::vector<double> weights(experts);
  for (int64_t e = 0; e < experts; ++e) weights[e] = std::pow(double(e + 1), -kZipfS);
  std::discrete_distribution<int64_t> pick(weights.begin(), weights.end());
  std::mt19937_64 rng(4);
  std::vector<int64_t> chosen;
  for (int64_t t = 0; t < tokens; ++t) {
    chosen.clear();
    while (int64_t(chosen.size()) < top_k)
      if (int64_t e = pick(rng); std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    for (int64_t e : chosen) ++counts[e];
  }
  return counts;
}

}  // namespace dmoe::bench

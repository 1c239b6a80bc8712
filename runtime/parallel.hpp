// runtime/parallel.hpp — internal: the CPU references' thread fan-out (not a public header).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace dmoe::detail {

// Runs body(i) for every i in [0, n) on `threads` threads (≤ 0: one per core), items handed out one at a
// time. Callers make each item own its outputs, so results do not depend on the thread count.
template <class F>
void parallel_for(int64_t n, int threads, F&& body) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < std::min<int64_t>(threads, n); ++i)
    pool.emplace_back([&] {
      for (int64_t j; (j = next.fetch_add(1)) < n;) body(j);
    });
  for (std::thread& t : pool) t.join();
}

}  // namespace dmoe::detail

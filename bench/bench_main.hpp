// What the benchmark programs' main()s share: a stack dump on a crash (symbols need -rdynamic; benchmark
// runs happen on machines without a debugger at hand) and one way of reporting failures.
#pragma once
#include <execinfo.h>
#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <exception>

#include "dmoe/driver.hpp"

namespace dmoe::bench {

inline const char* g_program = "bench";

inline void on_fatal_signal(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  (void)!write(STDERR_FILENO, g_program, std::strlen(g_program));
  const char msg[] = ": fatal signal; stack:\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// Runs the benchmark: exit 2 without a GPU (nothing to measure, like a usage error), 1 on a failure.
template <class F>
int bench_main(const char* program, F&& run) {
  g_program = program;
  std::signal(SIGSEGV, on_fatal_signal);
  std::signal(SIGABRT, on_fatal_signal);
  try {
    return run();
  } catch (const NoGpu& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}

}  // namespace dmoe::bench

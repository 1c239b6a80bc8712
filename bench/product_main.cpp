// product_bench — see product_bench.cpp. Usage: product_bench [--json] [--quick] [--filter TEXT] [--reps N]
#include <fmt/format.h>

#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "dmoe/driver.hpp"
#include "product_bench.hpp"

namespace {

// A crash prints its stack (symbols need -rdynamic) before dying: benchmark runs happen on machines
// without a debugger at hand.
void on_fatal_signal(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  const char msg[] = "product_bench: fatal signal; stack:\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGSEGV, on_fatal_signal);
  std::signal(SIGABRT, on_fatal_signal);
  dmoe::bench::ProductBenchOptions opt;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) opt.json = true;
    else if (!std::strcmp(argv[i], "--quick")) opt.quick = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc && (opt.reps = std::atoi(argv[++i])) > 0) continue;
    else {
      fmt::print(stderr, "usage: product_bench [--json] [--quick] [--filter TEXT] [--reps N]\n");
      return 2;
    }
  }
  try {
    return dmoe::bench::products(opt);
  } catch (const dmoe::NoGpu& e) {
    fmt::print(stderr, "product_bench: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "product_bench: error: {}\n", e.what());
    return 1;
  }
}

// routing_bench — see routing_bench.cpp. Usage: routing_bench [--json] [--quick] [--filter TEXT]
#include <fmt/format.h>

#include <cstring>
#include <exception>

#include "routing_bench.hpp"

int main(int argc, char** argv) {
  dmoe::bench::RoutingBenchOptions opt;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) opt.json = true;
    else if (!std::strcmp(argv[i], "--quick")) opt.quick = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else {
      fmt::print(stderr, "usage: routing_bench [--json] [--quick] [--filter TEXT]\n");
      return 2;
    }
  }
  try {
    return dmoe::bench::routing(opt);
  } catch (const std::exception& e) {
    fmt::print(stderr, "routing_bench: error: {}\n", e.what());
    return 1;
  }
}

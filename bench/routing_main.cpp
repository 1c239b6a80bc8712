// routing_bench — see routing_bench.cpp. Usage: routing_bench [--json] [--quick] [--filter TEXT]
#include <cstring>

#include "bench_main.hpp"
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
  return dmoe::bench::bench_main("routing_bench", [&] { return dmoe::bench::routing(opt); });
}

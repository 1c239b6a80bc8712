// product_bench — see product_bench.cpp. Usage: product_bench [--json] [--quick] [--tuned] [--gather] [--router-gemms] [--cluster 1|2]
// [--store-chunks N] [--act-warps 0|1] [--filter TEXT] [--reps N]
#include <cstdlib>
#include <cstring>

#include "bench_main.hpp"
#include "product_bench.hpp"

int main(int argc, char** argv) {
  dmoe::bench::ProductBenchOptions opt;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) opt.json = true;
    else if (!std::strcmp(argv[i], "--quick")) opt.quick = true;
    else if (!std::strcmp(argv[i], "--tuned")) opt.tuned = true;
    else if (!std::strcmp(argv[i], "--gather")) opt.gather = true;
    else if (!std::strcmp(argv[i], "--router-gemms")) opt.router_gemms = true;
    else if (!std::strcmp(argv[i], "--act-warps") && i + 1 < argc && (opt.act_warps = std::atoi(argv[++i])) >= 0 &&
             opt.act_warps <= 1)
      continue;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else if (!std::strcmp(argv[i], "--cluster") && i + 1 < argc && (opt.cluster = std::atoi(argv[++i])) > 0) continue;
    else if (!std::strcmp(argv[i], "--store-chunks") && i + 1 < argc && (opt.store_chunks = std::atoi(argv[++i])) >= 0)
      continue;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc && (opt.reps = std::atoi(argv[++i])) > 0) continue;
    else {
      fmt::print(stderr, "usage: product_bench [--json] [--quick] [--tuned] [--gather] [--router-gemms] [--cluster 1|2] [--store-chunks N] "
                         "[--act-warps 0|1] [--filter TEXT] [--reps N]\n");
      return 2;
    }
  }
  return dmoe::bench::bench_main("product_bench", [&] { return dmoe::bench::products(opt); });
}

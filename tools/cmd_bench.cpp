// dmoe bench: the benchmark programs, run from the CLI.
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli.hpp"
#include "dmoe/driver.hpp"
#include "layer_bench.hpp"
#include "product_bench.hpp"
#include "routing_bench.hpp"

namespace dmoe::cli {

Command add_bench_command(CLI::App& root) {
  CLI::App* app = root.add_subcommand("bench", "Benchmark kernels on the GPU (tables on stdout, JSON with --json)");
  auto opt = std::make_shared<bench::RoutingBenchOptions>();
  auto routing = std::make_shared<bool>(false), products = std::make_shared<bool>(false),
       tuned = std::make_shared<bool>(false), layer = std::make_shared<bool>(false),
       check = std::make_shared<bool>(false);
  auto presets = std::make_shared<std::vector<std::string>>();
  auto tokens = std::make_shared<int64_t>(0);
  auto schedule = std::make_shared<std::string>();
  auto gather = std::make_shared<bool>(false);
  auto cluster = std::make_shared<int>(0);
  auto store_chunks = std::make_shared<int>(-1);
  auto act_warps = std::make_shared<int>(-1);
  auto layer_options = std::make_shared<LayerOptions>();
  app->add_flag("--routing", *routing, "The routing chain: router, bins, permutation, topology, gather, scatter");
  app->add_flag("--products", *products, "The block-sparse products against cuBLASLt and the GPU's ceilings");
  app->add_flag("--layer", *layer, "The whole layer, forward and backward, per preset, against the GPU's ceilings");
  app->add_option("--presets", *presets, "--layer: presets to run, comma-separated (default: all but tiny)")
      ->delimiter(',');
  app->add_option("--tokens", *tokens, "--layer: tokens per step (default: each preset's)");
  app->add_flag("--check", *check, "--layer: also check each step against sampled fp64 recomputations");
  app->add_flag("--recompute", layer_options->recompute,
                "--layer: the memory-saving mode (contexts keep the permuted input and pre-activations only)");
  app->add_option("--jitter", layer_options->jitter_eps, "--layer: router input jitter epsilon, in [0, 1)")
      ->type_name("EPS");
  app->add_flag("--tuned", *tuned, "--products: dmoe's tiles from the tuning database (dmoe tune) instead of the defaults");
  app->add_option("--schedule", *schedule,
                  "--products: every wgmma product with this consumer schedule's default tile: cooperative|pingpong")
      ->check(CLI::IsMember({"cooperative", "pingpong"}));
  app->add_flag("--gather", *gather,
                "--products: the SDDs gather A's rows through a random row map as the layer's forward SDD does");
  app->add_option("--cluster", *cluster,
                  "--products: the wgmma products' CTAs per cluster, 1 or 2, where their column tiles pair up")
      ->check(CLI::IsMember({1, 2}));
  app->add_option("--store-chunks", *store_chunks,
                  "--products: the cooperative plain wgmma products stage their output in N 64-column chunk buffers "
                  "(0: the whole tile) with the deepest ring that fits, where their tile allows it")
      ->check(CLI::Range(0, 4));
  app->add_option("--act-warps", *act_warps,
                  "--products: 1, the cooperative activation SDDs finish their epilogue on the producer warpgroup's "
                  "idle warps while the consumers start their next tile (their default); 0, their consumers do")
      ->check(CLI::IsMember({0, 1}));
  app->add_flag("--json", opt->json, "Also print one JSON object per problem");
  app->add_flag("--quick", opt->quick, "Only the smallest problems");
  app->add_option("--filter", opt->filter, "Only problems whose label contains TEXT, e.g. 'E=64'")->type_name("TEXT");
  CLI::Option* reps = app->add_option("--reps", opt->reps,
                                      "Launches per timed batch, the median of 7 batches reported (default: 20 for "
                                      "--routing, about 10 ms of launches for --products)");
  return {app, [opt, routing, products, tuned, reps, layer, presets, tokens, check, schedule, gather, cluster, store_chunks,
               act_warps, layer_options] {
            if (!*routing && !*products && !*layer)
              throw InvalidArgument("choose what to benchmark: --routing, --products or --layer");
            if (opt->reps < 1) throw InvalidArgument(fmt::format("--reps must be positive, got {}", opt->reps));
            try {
              int rc = 0;
              if (*routing) rc = bench::routing(*opt);
              if (*products && rc == 0)
                rc = bench::products(
                    {opt->json, opt->filter, reps->count() ? opt->reps : 0, opt->quick, *tuned, *schedule, *gather, *cluster,
                     *store_chunks, *act_warps});
              if (*layer && rc == 0)
                rc = bench::layer({*presets, *tokens, opt->json, *check, reps->count() ? opt->reps : 10, *layer_options});
              return rc;
            } catch (const NoGpu& e) {  // nothing to measure here: like a usage error, not a failed run
              fmt::print(stderr, "dmoe: error: {}\n", e.what());
              return kExitUsage;
            }
          }};
}

}  // namespace dmoe::cli

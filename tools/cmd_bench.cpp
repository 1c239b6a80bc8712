// dmoe bench: the benchmark programs, run from the CLI.
#include <fmt/format.h>

#include <memory>

#include "cli.hpp"
#include "routing_bench.hpp"

namespace dmoe::cli {

Command add_bench_command(CLI::App& root) {
  CLI::App* app = root.add_subcommand("bench", "Benchmark kernels on the GPU (tables on stdout, JSON with --json)");
  auto opt = std::make_shared<bench::RoutingBenchOptions>();
  auto routing = std::make_shared<bool>(false);
  app->add_flag("--routing", *routing, "The routing chain: router, bins, permutation, topology, gather, scatter");
  app->add_flag("--json", opt->json, "Also print one JSON object per problem");
  app->add_flag("--quick", opt->quick, "Only the smallest problems");
  app->add_option("--filter", opt->filter, "Only problems whose label contains TEXT, e.g. 'E=64'")->type_name("TEXT");
  app->add_option("--reps", opt->reps, "Launches per timed batch (the median of 7 batches is reported)")->capture_default_str();
  return {app, [opt, routing] {
            if (!*routing) throw InvalidArgument("choose what to benchmark: --routing");
            if (opt->reps < 1) throw InvalidArgument(fmt::format("--reps must be positive, got {}", opt->reps));
            return bench::routing(*opt);
          }};
}

}  // namespace dmoe::cli

// The routing chain's benchmark: each kernel and the whole chain on the GPU, against the copy ceiling.
#pragma once
#include <string>

namespace dmoe::bench {

struct RoutingBenchOptions {
  bool json = false;         // also print one JSON object per problem
  std::string filter;        // only problems whose label contains this text
  int reps = 20;             // launches per timed batch; the median over 7 batches is reported
  bool quick = false;        // the smallest problems only (a smoke run)
};

// Prints a table (and JSON lines). Returns a process exit code; throws NoGpu without a GPU.
int routing(const RoutingBenchOptions&);

}  // namespace dmoe::bench

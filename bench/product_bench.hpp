// The block-sparse products' benchmark: dmoe's SDD/DSD/DDS against cuBLASLt and the GPU's ceilings.
#pragma once
#include <string>

namespace dmoe::bench {

struct ProductBenchOptions {
  bool json = false;   // also print a header object and one JSON object per problem
  std::string filter;  // only problems whose label contains this text
  int reps = 0;        // launches per timed batch (median over 7 batches); 0: enough for ~10 ms a batch
  bool quick = false;  // one problem of MegaBlocks' set only (a smoke run)
  bool tuned = false;  // dmoe's tiles from the tuning database (tuned_spec) instead of the defaults
};

// Prints a table (and JSON lines). Returns a process exit code; throws NoGpu without a GPU.
int products(const ProductBenchOptions&);

}  // namespace dmoe::bench

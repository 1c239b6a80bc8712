// Autotuning on the GPU: every candidate tile of a layer's products, checked against the SIMT reference
// kernel on the same inputs, timed, the fastest recorded in the tuning database.
#pragma once
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "dmoe/spec.hpp"

namespace dmoe::bench {

// One product to tune: op, layout and SDD's fused epilogue (a problem of its own: `sdd_nt+gelu`).
struct TuneOp {
  Op op;
  bool trans_a, trans_b;
  Epilogue epilogue = Epilogue::None;
  bool gated = false;  // SDD: the gated product (KernelSpec::gated), act(A·B)·(A·B2) with both pre-activations
};

struct TuneOptions {
  MoeShape shape;                                 // tokens: the routing's T
  std::vector<TuneOp> ops;                        // products
  std::vector<int64_t> blocks{128};
  bool zipf = false;                              // Zipf-skewed routing instead of uniform
  std::vector<int64_t> counts;                    // tokens per expert (E, summing to T·K, each ≤ T) instead
                                                  // of drawing them; empty: uniform or Zipf
  double budget_s = 300;                          // seconds for the whole run, shared out over the products
  int jobs = 0;                                   // parallel compiles (0: every core)
  std::filesystem::path db;                       // the tuning database file
  std::string plot;                               // SVG of every candidate's time per product ("": none)
};

// Prints progress and a final table; returns a process exit code. Throws NoGpu without a GPU.
int tune(const TuneOptions&);

}  // namespace dmoe::bench

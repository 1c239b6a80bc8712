// The dMoE layer on the GPU, end to end: `dmoe run --device gpu` (one shape, checked and timed) and
// `dmoe bench --layer` (every preset, against the GPU's measured ceilings).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dmoe/layer.hpp"

namespace dmoe::bench {

struct LayerRunOptions {
  std::string label;       // the preset's name, or "custom"
  MoeShape shape;
  LayerOptions layer;
  bool check = true;       // the sampled fp64 check (reference::check_layer_sample)
  bool json = false;
  int reps = 10;           // timed steps; medians reported
  uint64_t seed = 0;       // 0: fresh
  double gemm_flops_per_sec = 0, copy_bytes_per_sec = 0;  // ceilings for the SOL fractions (0: not shown)
};

struct LayerRunResult {
  double warmup_ms = 0, fwd_ms = 0, bwd_ms = 0;     // fwd/bwd: the GPU's time, the host enqueuing ahead
  double fwd_idle_ms = 0, bwd_idle_ms = 0;          // each pass started on an idle GPU (host latency included)
  double host_fwd_ms = 0, host_bwd_ms = 0;          // the host's time to enqueue one pass
  double fwd_sol = 0, step_sol = 0;  // speed-of-light fractions (0 without ceilings)
  double routing_share = 0;          // routing + permutation phases / the step (profiled steps)
  double padding = 0;                // padded rows over the T·K routed rows, minus 1 (the last step's routing):
                                     // extra rows the products compute that the SOL does not count
  size_t dmoe_bytes = 0, peak_bytes = 0;
  double max_rel_err = 0;
  bool verified = false, checked = false;
  int products = 0;                  // distinct product kernels the layer launches
  std::vector<std::string> tuned;    // those on a tile from the tuning database: "dsd_tn wgmma 128x256x64 s4 st2"
};

// One checked, timed layer step on random data; prints a report (and a JSON line with opt.json).
LayerRunResult run_layer_gpu(const LayerRunOptions&);

struct LayerBenchOptions {
  std::vector<std::string> presets;  // empty: every preset but tiny
  int64_t tokens = 0;                // 0: each preset's own
  bool json = false, check = false;
  int reps = 10;
  LayerOptions layer;                // every preset's layer options (recompute, jitter, …)
};

// Measures the ceilings, runs every preset, prints a table. Returns a process exit code.
int layer(const LayerBenchOptions&);

// The layer's block size, tuned on the whole step: for each block size, the layer built with it runs
// forward + backward on a routing drawn uniform or Zipf-skewed (router logits biased by −1.2·ln(e + 1)),
// or toward a histogram of tokens per expert (bias ln(max(count, 0.5)/mean): approximate, the router's own
// top-k decides), timed (median of `reps` steps) beside its padding waste. Prints a table; returns an
// exit code.
struct LayerTuneOptions {
  MoeShape shape;
  std::vector<int64_t> blocks{64, 128, 256};
  bool zipf = false;
  std::vector<int64_t> counts;  // E tokens per expert to bias the router toward (overrides zipf); empty: none
  int reps = 10;
};
int tune_layer_blocks(const LayerTuneOptions&);

}  // namespace dmoe::bench

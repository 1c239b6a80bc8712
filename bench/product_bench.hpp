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
  std::string schedule;  // "cooperative" or "pingpong": every wgmma product with that schedule's default tile
  bool gather = false;   // SDDs with a row-major A gather its rows through a row map (KernelSpec::gather), the
                         // real rows from a random permutation of the T·K rows (as a routing scatters them)
  int cluster = 0;       // 1 or 2: the wgmma products' CTAs per cluster (TileConfig::cluster) where the tile
                         // allows it (their column tiles pair up; the kernel's name says c2); 0: the spec's
  int store_chunks = -1;  // ≥ 0: the cooperative plain wgmma products stage their output in this many 64-column
                          // chunk buffers (TileConfig::store_chunks, the deepest ring that fits) where the tile
                          // allows it (the kernel's name says st<N>); −1: the spec's
  int act_warps = -1;  // 1: the cooperative activation SDDs finish their epilogue on the producer warpgroup's
                       // idle warps (TileConfig::act_warps, named aw) where the tile allows it; 0: their
                       // consumers do; −1: the spec's
  bool router_gemms = false;  // (last: tools/cmd_bench.cpp initializes the fields above in order)
                              // instead of the products: the layer's three router GEMMs (cuBLASLt) at the
                              // presets' shapes, each of cuBLASLt's first 8 heuristic algorithms timed
};

// Prints a table (and JSON lines). Returns a process exit code; throws NoGpu without a GPU.
int products(const ProductBenchOptions&);

// The GPU's ceilings as the product benchmark measures them (and prints, one line): the fastest of
// cuBLASLt's first 4 algorithms on a bf16 8192³ GEMM over rotated operands, and a 2 GiB device-to-device
// copy. Without a working cuBLASLt the GEMM ceiling is the H200 baseline (gemm_measured false).
struct Ceilings {
  double gemm_flops_per_sec = 0, copy_bytes_per_sec = 0;
  bool gemm_measured = false;
};
Ceilings measure_ceilings();

}  // namespace dmoe::bench

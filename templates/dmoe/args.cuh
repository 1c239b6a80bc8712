// dmoe/args.cuh — the kernel ABI: argument structs and grid sizing shared by host C++ and device code.
// Kept free of CUDA-only syntax so the host compiler includes it too; the two sides cannot drift apart.
#pragma once

#if defined(__CUDACC_RTC__)
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#define DMOE_HD __host__ __device__
#else
#include <cstdint>
#define DMOE_HD
#endif

namespace dmoe {

// Device view of the blocked CSR + COO topology of the sparse matrix S [T_pad, E·F], with the transpose
// metadata (dmoe-semantics.md). All indices are int32; all pointers are device pointers.
struct Topology {
  const int32_t* row_indices;       // [max_blocks]      block row of each block
  const int32_t* column_indices;    // [max_blocks]      block column of each block
  const int32_t* offsets;           // [max_block_rows+1] first block of each block row
  const int32_t* column_indices_t;  // [max_blocks]      block row of the i-th block in column order
  const int32_t* offsets_t;         // [E·F/B + 1]        first (column-ordered) block of each block column
  const int32_t* block_offsets_t;   // [max_blocks]      position in data of the i-th block in column order
  const int32_t* block_rows;        // device scalar: T_pad / B, the true number of block rows
};

// Arguments of every block-sparse product. Which pointer is what depends on the op:
//   SDD: a = dense A, b = dense B, c = S data [blocks, B, B]
//   DSD: a = S data,  b = dense B, c = dense C
//   DDS: a = dense A, b = S data,  c = dense C
// `max_block_rows` is the host's upper bound on T_pad / B: it sizes the grid and is the leading
// dimension (times B) of any dense operand whose contiguous dimension is T_pad.
struct ProductArgs {
  const void* a;
  const void* b;
  void* c;
  Topology topo;
  int32_t max_block_rows;
  // SDD epilogues only (Epilogue in spec.hpp): the pre-activation, in C's layout. Activation epilogues
  // write it when non-null; gradient epilogues read it.
  void* aux;
  // Gathering SDD only (KernelSpec::gather): A's row r is row gather_rows[r] of a = [tokens, H] (−1: zeros),
  // for r below the true T_pad (RoutingState::row_tokens); null for every other kernel.
  const int32_t* gather_rows;
  // Gated SDD only (KernelSpec::gated): the gate's weights (B2, B's layout) and, optional, where the gate's
  // pre-activation g = A·op(B2) is kept (aux2, C's layout); null for every other kernel.
  const void* b2;
  void* aux2;
  // Scattering DSD only (KernelSpec::scatter): output row r is written to row scatter_rows[r] of
  // c = [tokens, H] (nothing where it is −1), for r below the true T_pad; null for every other kernel.
  const int32_t* scatter_rows;
};

// Number of CTAs a product launches (one-dimensional grid). Shared by the launcher and the kernel so the
// task decomposition has a single definition. `sparse_t` is whether the sparse operand is transposed
// (DSD: trans_a, DDS: trans_b). Tasks past the true size exit early on the device.
//   SDD:      each B×B block of S, split into (B/tm)·(B/tn) tiles
//   DSD  S:   block rows × (B/tm) × (H/tn)            → C [T_pad, H]
//   DSD  Sᵀ:  block columns (E·F/B) × (B/tm) × (H/tn) → C [E·F, H]
//   DDS  S:   (H/tm) × block columns × (B/tn)         → C [H, E·F]
//   DDS  Sᵀ:  (H/tm) × block rows × (B/tn)            → C [H, T_pad]
enum ProductKind : int32_t { kSDD = 0, kDSD = 1, kDDS = 2 };

// A TMA tensor map (CUtensorMap): 128 opaque bytes, 128-byte aligned as CUDA 13 declares it, encoded on the host by
// cuTensorMapEncodeTiled and passed by value inside a __grid_constant__ kernel parameter.
struct alignas(128) TensorMap {
  uint64_t opaque[16];
};

// Arguments of the Hopper (wgmma) products: tensor maps over the two operands (which tensor each one
// describes, and its box, is fixed per op and layout: see sm90_product.cuh), then the common arguments.
struct Sm90ProductArgs {
  TensorMap a;
  TensorMap b;
  TensorMap c;    // the output, stored from shared memory in {64, BM} boxes
  TensorMap aux;  // the epilogue's pre-activation, same boxes as c (a copy of c when unused)
  TensorMap b2;   // gated SDD: the gate's weights, b's boxes (a copy of b when unused)
  TensorMap aux2; // gated SDD: the gate's pre-activation, c's boxes (a copy of c when unused)
  ProductArgs p;
};

// Output tiles of the wgmma product (kernels/sm90_product.cuh) for `block_rows` block rows: the outer
// index (block rows; block columns for DSD Sᵀ and DDS S, which reduce down a column) times the tiles of
// one outer index. The launcher sizes the grid with it, the kernel's scheduler walks it.
DMOE_HD inline int64_t sm90_product_tiles(int32_t kind, bool trans_a, bool trans_b, int64_t block, int64_t hidden,
                                          int64_t ffn, int64_t experts, int64_t tile_m, int64_t tile_n,
                                          int64_t block_rows) {
  const bool by_column = kind == kDSD ? trans_a : kind == kDDS ? !trans_b : false;
  // A DDS S tile wider than a block spans tile_n / block adjacent block columns of one expert.
  const int64_t span = kind == kDDS && tile_n > block ? tile_n / block : 1;
  const int64_t outers = by_column ? experts * ffn / block / span : block_rows;
  const int64_t mt = (kind == kDDS ? hidden : block) / tile_m;
  const int64_t nt = kind == kSDD ? ffn / tile_n : kind == kDSD ? hidden / tile_n : span > 1 ? 1 : block / tile_n;
  return outers * mt * nt;
}

constexpr int kSm90MaxSharedBytes = 232448;  // 227 KiB: the most dynamic shared memory an sm_90 CTA may use

// Dynamic shared memory of the Hopper products: the stage ring ((BM + BN) × 64 elements per stage,
// 16-bit; (BM + 2·BN) for the gated SDD's two B operands), the output tile (BM × BN, staged for the TMA store; one per consumer when ping-pong), 1 KiB of
// slack to align both to the 128-byte swizzle's 1 KiB atoms, two mbarriers per stage and one per output
// tile for the epilogue's operand (ping-pong: two more that order the consumers' main loops).
// store_chunks > 0: the output is staged in store_chunks 64-column chunk buffers per consumer warpgroup
// (64 rows each) instead of one (ping-pong: two) whole-tile buffers. act_extra: the bytes of the activation
// warps' second buffer (TileConfig::act_warps; sm90_act_extra_bytes).
DMOE_HD constexpr int sm90_smem_bytes(int bm, int bn, int stages, bool pingpong = false, bool gated = false,
                                      int store_chunks = 0, int act_extra = 0) {
  return stages * (bm + (gated ? 2 : 1) * bn) * 64 * 2 +
         (store_chunks > 0 ? 2 * store_chunks * 64 * 64 * 2 : (pingpong ? 2 : 1) * bm * bn * 2) + act_extra + 1024 +
         (2 * stages + (pingpong ? 4 : 1)) * 8;
}

// The activation warps' second buffer: the gated SDD's g tile (BM × BN), a gradient epilogue's
// pre-activation chunk (BM × 64); none for a forward activation (it works in the staged tile).
DMOE_HD constexpr int sm90_act_extra_bytes(int bm, int bn, bool act_warps, bool gated, bool gradient) {
  return !act_warps ? 0 : gated ? bm * bn * 2 : gradient ? bm * 64 * 2 : 0;
}

// The most dynamic shared memory one CTA may use: sm_80 (A100) 163 KiB, sm_86 / sm_89 99 KiB.
constexpr int kSm80MaxSharedBytes = 166912;
constexpr int kSm86MaxSharedBytes = 101376;

// Dynamic shared memory of the Ampere (mma.sync) products: the cp.async ring (BM×BK and BN×BK 16-bit
// tiles per stage, XOR-swizzled in 16-byte chunks, no padding), reused once the mainloop is done to
// stage the BM×BN output tile for 16-byte stores.
DMOE_HD constexpr int sm80_smem_bytes(int bm, int bn, int bk, int stages) {
  return stages * (bm + bn) * bk * 2 > bm * bn * 2 ? stages * (bm + bn) * bk * 2 : bm * bn * 2;
}

DMOE_HD inline int64_t product_ctas(int32_t kind, bool sparse_t, int64_t block, int64_t hidden,
                                    int64_t ffn, int64_t experts, int64_t tile_m, int64_t tile_n,
                                    int64_t max_block_rows) {
  const int64_t block_cols = experts * ffn / block;
  if (kind == kSDD) return max_block_rows * (ffn / block) * (block / tile_m) * (block / tile_n);
  if (kind == kDSD) return (sparse_t ? block_cols : max_block_rows) * (block / tile_m) * (hidden / tile_n);
  return (hidden / tile_m) * (sparse_t ? max_block_rows : block_cols) * (block / tile_n);
}

}  // namespace dmoe

namespace dmoe {
// Dynamic shared memory of the product kernel: fp32 staging of one TK-deep slice of each operand tile,
// each row padded by one word against bank conflicts.
DMOE_HD inline int64_t product_smem_bytes(int64_t tile_m, int64_t tile_n, int64_t tile_k) {
  return tile_k * ((tile_m + 1) + (tile_n + 1)) * 4;
}
}  // namespace dmoe

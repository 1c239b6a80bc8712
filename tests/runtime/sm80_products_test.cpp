// GPU tests of the Ampere-class (mma.sync + ldmatrix + cp.async ring) products against the fp64
// reference: every op and operand layout, both element types, every block size, tile shapes, warp
// counts and ring depths, skewed and degenerate routings, capacity past T_pad. The kernel runs on any
// arch dmoe targets: on Hopper it is compiled for sm_90a, which runs mma.sync too.
#include <doctest/doctest.h>

#include "product_check.hpp"

using namespace dmoe;
using test::Case;
using test::kAllTrans;
using test::kSchedule;

namespace {

// The arch whose default mma.sync tile the cases use: the device's own on sm_80/86/89; sm_80's on
// Hopper, where the default is the wgmma kernel.
Arch tile_arch() { return test::arch() == Arch::SM90a ? Arch::SM80 : test::arch(); }

KernelSpec probe(const Case& c) {
  KernelSpec k;
  k.op = c.op;
  k.trans_a = c.trans_a;
  k.trans_b = c.trans_b;
  k.dtype = c.dtype;
  k.arch = test::arch();
  k.block = c.block;
  k.hidden = c.hidden;
  k.ffn = c.ffn;
  k.experts = static_cast<int32_t>(c.counts.size());
  k.tile = c.tile;
  return k;
}

// The case with the mma.sync tile default_spec picks for its shape on an Ampere-class arch.
Case with_default_tile(Case c) {
  MoeShape s;
  s.hidden = c.hidden;
  s.ffn = c.ffn;
  s.experts = static_cast<int64_t>(c.counts.size());
  s.block = c.block;
  s.dtype = c.dtype;
  c.tile = default_spec(s, c.op, c.trans_a, c.trans_b, tile_arch()).tile;
  REQUIRE(c.tile.mma == Mma::MmaSync);
  return c;
}

void run_default(const Case& c) { test::run(with_default_tile(c)); }

// Runs the case if its tile is valid for the op, shape and device (not every tile fits every op: DDS
// tiles are at most a block wide, sm_86 has 99 KiB of shared memory, …). Returns whether it ran.
bool run_if_valid(const Case& c) {
  try {
    validate(probe(c));
  } catch (const InvalidArgument&) {
    return false;
  }
  test::run(c);
  return true;
}

}  // namespace

TEST_CASE("sm80 products: every op in every operand layout (bf16, B=128)") {
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans) run_default(Case{op, ta, tb});
}

TEST_CASE("sm80 products: fp16 in every operand layout") {
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans) {
      Case c{op, ta, tb};
      c.dtype = DType::FP16;
      run_default(c);
    }
}

TEST_CASE("sm80 products: block sizes 64 and 256") {
  test::check_block_sizes([](const Case& c) { run_default(c); });
}

TEST_CASE("sm80 products: tile shapes, warp counts and ring depths") {
  const TileConfig tiles[] = {
      {128, 128, 32, 8, 3, Mma::MmaSync}, {128, 128, 64, 8, 2, Mma::MmaSync}, {128, 128, 32, 4, 4, Mma::MmaSync},
      {64, 64, 32, 4, 2, Mma::MmaSync},   {64, 64, 64, 8, 5, Mma::MmaSync},   {128, 64, 32, 8, 4, Mma::MmaSync},
      {64, 128, 64, 4, 3, Mma::MmaSync},  {64, 128, 32, 8, 5, Mma::MmaSync},
  };
  int ran = 0;
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans)
      for (const TileConfig& tile : tiles) {
        Case c{op, ta, tb};
        c.hidden = 512;
        c.ffn = 512;
        c.tile = tile;
        ran += run_if_valid(c);
      }
  CHECK(ran >= 80);
}

TEST_CASE("sm80 products: block size 64 and 256 with other tiles") {
  int ran = 0;
  for (auto [op, ta, tb] : kSchedule)
    for (const TileConfig& tile : {TileConfig{64, 64, 64, 4, 3, Mma::MmaSync}, TileConfig{64, 128, 32, 8, 2, Mma::MmaSync},
                                   TileConfig{128, 64, 64, 8, 3, Mma::MmaSync}}) {
      Case c64{op, ta, tb};
      c64.block = 64;
      c64.counts = {1, 70, 0, 200, 64};
      c64.tile = tile;
      ran += run_if_valid(c64);
      Case c256{op, ta, tb};
      c256.block = 256;
      c256.ffn = 512;
      c256.counts = {300, 0, 1};
      c256.tile = tile;
      ran += run_if_valid(c256);
    }
  CHECK(ran >= 20);
}

TEST_CASE("sm80 products: capacity beyond the true T_pad is skipped on the device") {
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans) {
      Case c{op, ta, tb};
      c.extra_block_rows = 5;
      run_default(c);
    }
}

TEST_CASE("sm80 products: degenerate routings") {
  for (auto [op, ta, tb] : kSchedule) {
    Case one{op, ta, tb};
    one.counts = {0, 0, 517, 0};  // all tokens to one expert: the other experts' columns are zero
    run_default(one);
    Case single{op, ta, tb};
    single.counts = {300};  // E = 1
    run_default(single);
    Case tiny{op, ta, tb};
    tiny.counts = {1, 0, 0, 0};  // one token: one block row
    run_default(tiny);
  }
}

TEST_CASE("sm80 products: long reductions around the ring (skewed routing)") {
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.hidden = 768;  // 24 k-steps of 32 for SDD: the 5-stage ring wraps several times
    c.ffn = 384;
    c.counts = {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300};  // Zipf-like, empty experts, 1-token expert
    run_default(c);
  }
}

TEST_CASE("sm80 products: more than 65536 padded rows") { test::check_many_rows(run_default); }

TEST_CASE("sm80 products: fused activation epilogues and their gradients (SDD)") {
  test::check_epilogues(run_default);
}

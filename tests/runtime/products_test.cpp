// GPU tests of SDD, DSD and DDS against the fp64 reference on random block-sparse topologies.
#include <doctest/doctest.h>

#include "product_check.hpp"

using namespace dmoe;

using test::Case;
using test::kAllTrans;
using test::kSchedule;
using test::run;

TEST_CASE("products: every op in every operand layout (bf16, B=128)") {
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans) run(Case{op, ta, tb});
}

TEST_CASE("products: fp16") {
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.dtype = DType::FP16;
    run(c);
  }
}

TEST_CASE("products: block sizes 64 and 256") { test::check_block_sizes(run); }

TEST_CASE("products: tile configurations") {
  for (TileConfig tile : {TileConfig{32, 32, 16, 4, 1}, TileConfig{128, 128, 32, 8, 1},
                          TileConfig{64, 128, 64, 8, 1}, TileConfig{128, 64, 16, 4, 1}})
    for (auto [op, ta, tb] : kSchedule) {
      Case c{op, ta, tb};
      c.tile = tile;
      run(c);
    }
}

TEST_CASE("products: capacity beyond the true T_pad is skipped on the device") {
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.extra_block_rows = 3;
    run(c);
  }
}

TEST_CASE("products: a tile that fits no block fails loudly, though it would launch no CTA") {
  // m = 128 rows in 64-row blocks: the grid is empty, and the launch used to return without a word.
  Case c{Op::DSD, true, false};
  c.block = 64;
  c.tile = TileConfig{128, 64, 16, 4, 1};
  CHECK_THROWS_WITH_AS(run(c), doctest::Contains("tile m = 128 does not divide the block size 64"), InvalidArgument);
}

TEST_CASE("products: degenerate routings") {
  for (auto [op, ta, tb] : kSchedule) {
    Case one{op, ta, tb};
    one.counts = {0, 0, 517, 0};  // all tokens to one expert
    run(one);
    Case single{op, ta, tb};
    single.counts = {300};  // E = 1
    run(single);
  }
}

TEST_CASE("products: more than 65536 padded rows") {
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.block = 64;
    c.hidden = 64;
    c.ffn = 128;
    c.counts = {30000, 0, 25000, 15001};  // T_pad = 70080
    run(c);
  }
}

TEST_CASE("products: fused activation epilogues and their gradients (SDD)") {
  for (Epilogue e : {Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu, Epilogue::GeluTanhGrad,
                     Epilogue::SiluGrad, Epilogue::ReluGrad})
    for (bool save_pre : {false, true}) {
      if (is_gradient(e) && save_pre) continue;
      Case c{Op::SDD, false, true};
      c.epilogue = e;
      c.save_pre = save_pre;
      run(c);
    }
}

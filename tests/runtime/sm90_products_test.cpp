// GPU tests of the Hopper (TMA + wgmma) products against the fp64 reference: every op and operand layout,
// both element types, every block size, tile shapes, pipeline depths, tile orders and both consumer
// schedules (cooperative, ping-pong), skewed and degenerate routings, and problems large enough that each CTA runs several tiles around the stage ring.
#include <doctest/doctest.h>

#include "product_check.hpp"

using namespace dmoe;
using test::Case;
using test::kAllTrans;
using test::kSchedule;

namespace {

bool hopper() {
  if (test::arch() == Arch::SM90a) return true;
  MESSAGE("SKIPPED: the wgmma kernels need an sm_90a GPU; this one is " << test::device().properties().name);
  return false;
}

// The case with the tile default_spec picks on Hopper for its shape (asserting it is a wgmma tile).
Case with_default_tile(Case c) {
  MoeShape s;
  s.hidden = c.hidden;
  s.ffn = c.ffn;
  s.experts = static_cast<int64_t>(c.counts.size());
  s.block = c.block;
  s.dtype = c.dtype;
  c.tile = default_spec(s, c.op, c.trans_a, c.trans_b, Arch::SM90a).tile;
  REQUIRE(c.tile.mma == Mma::Wgmma);
  return c;
}

void run_default(const Case& c) { test::run(with_default_tile(c)); }

// Two routings: counts off the block multiple with an empty expert, and a skewed one (empty experts, one
// expert of a single token) where every CTA runs several tiles around the ring.
const std::vector<std::vector<int64_t>> kRoutings = {{130, 0, 257, 64}, {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300}};

// Every product of the schedule at hidden = ffn = 512, with each of `tiles` the op accepts, on kRoutings.
// Returns how many ran.
int run_on_routings(const std::vector<TileConfig>& tiles, int32_t extra_block_rows = 0) {
  int ran = 0;
  for (auto [op, ta, tb] : kSchedule)
    for (const TileConfig& tile : tiles)
      for (const std::vector<int64_t>& counts : kRoutings) {
        Case c{op, ta, tb};
        c.hidden = 512;
        c.ffn = 512;
        c.counts = counts;
        c.tile = tile;
        c.extra_block_rows = extra_block_rows;
        if (!test::fits(c)) continue;
        test::run(c);
        ++ran;
      }
  return ran;
}

}  // namespace

TEST_CASE("sm90 products: every op in every operand layout (bf16, B=128)") {
  if (!hopper()) return;
  for (Op op : {Op::SDD, Op::DSD, Op::DDS})
    for (auto [ta, tb] : kAllTrans) run_default(Case{op, ta, tb});
}

TEST_CASE("sm90 products: fp16") {
  if (!hopper()) return;
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.dtype = DType::FP16;
    run_default(c);
  }
}

TEST_CASE("sm90 products: block sizes 64 and 256") {
  if (!hopper()) return;
  test::check_block_sizes([](const Case& c) { run_default(c); });
}

TEST_CASE("sm90 products: tile shapes and pipeline depths") {
  if (!hopper()) return;
  int ran = 0;
  for (auto [op, ta, tb] : kSchedule)
    for (auto [m, n] : {std::pair{128, 64}, {128, 128}, {128, 256}, {64, 128}, {64, 256}})
      for (int stages : {2, 3, 0}) {
        Case c{op, ta, tb};
        c.hidden = 512;
        c.ffn = 512;
        c.tile = wgmma_tile(m, n);
        if (stages) c.tile.stages = static_cast<uint8_t>(stages);
        if (!test::fits(c)) continue;  // not every tile fits every op (DDS n within a block, …)
        test::run(c);
        ++ran;
      }
  CHECK(ran >= 30);
}

TEST_CASE("sm90 products: tile orders (group 1, partial last groups, a group wider than the outer count)") {
  if (!hopper()) return;
  // 14 block rows and 10 block columns: group 4 leaves a last group of 2 both ways, group 16 is one
  // partial group; the default case has 6 block rows and 8 block columns.
  const std::vector<int64_t> wide = {700, 0, 300, 129, 260};
  struct Order {
    Op op;
    bool ta, tb;
    int group;
    bool wide;
  };
  for (const Order o : {Order{Op::SDD, false, true, 1, true}, {Op::SDD, false, true, 4, true},
                        {Op::DSD, false, false, 16, false}, {Op::DSD, true, false, 4, true},
                        {Op::DDS, false, false, 16, true}}) {
    Case c{o.op, o.ta, o.tb};
    if (o.wide) c.counts = wide;
    c = with_default_tile(c);
    c.tile.group = static_cast<uint8_t>(o.group);
    test::run(c);
  }
}

TEST_CASE("sm90 products: capacity beyond the true T_pad is skipped on the device") {
  if (!hopper()) return;
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.extra_block_rows = 5;
    run_default(c);
  }
}

TEST_CASE("sm90 products: degenerate routings") {
  if (!hopper()) return;
  for (auto [op, ta, tb] : kSchedule) {
    Case one{op, ta, tb};
    one.counts = {0, 0, 517, 0};  // all tokens to one expert
    run_default(one);
    Case single{op, ta, tb};
    single.counts = {300};  // E = 1
    run_default(single);
  }
}

TEST_CASE("sm90 products: many tiles per CTA around the stage ring (skewed routing)") {
  if (!hopper()) return;
  for (auto [op, ta, tb] : kSchedule) {
    Case c{op, ta, tb};
    c.hidden = 768;  // 12 reduction steps for SDD: the ring wraps several times per tile
    c.ffn = 384;
    c.counts = {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300};  // Zipf-like, empty experts, 1-token expert
    run_default(c);
  }
}

TEST_CASE("sm90 products: more than 65536 padded rows") {
  if (!hopper()) return;
  test::check_many_rows(run_default);
}

TEST_CASE("sm90 products: fused activation epilogues and their gradients (SDD)") {
  if (!hopper()) return;
  test::check_epilogues([](const Case& c) {
    run_default(c);
    Case wide = c;  // 128-column tiles (several per block row), fp16
    wide.dtype = DType::FP16;
    wide.tile = wgmma_tile(128, 128);
    test::run(wide);
  });
}

TEST_CASE("sm90 products: the ping-pong schedule") {
  if (!hopper()) return;
  // Each consumer owns every other tile of its CTA: odd and even tile counts per CTA, CTAs with one tile
  // (the other consumer idle), tiles with no reduction steps (an empty expert's weight gradient), the
  // ring wrapping inside a tile and between the consumers' tiles, both row-group counts (m 64, 128).
  const int ran = run_on_routings({wgmma_tile(128, 128, true), wgmma_tile(64, 256, true), wgmma_tile(64, 128, true),
                                   wgmma_tile(128, 64, true)});
  CHECK(ran >= 24);
  // Every operand layout, a shallow ring, fp16, B 64 and 256, a tile order.
  for (auto [ta, tb] : kAllTrans)
    for (Op op : {Op::SDD, Op::DSD, Op::DDS}) {
      Case c{op, ta, tb};
      c.tile = wgmma_tile(128, 128, true);
      c.tile.stages = 2;
      test::run(c);
    }
  for (int32_t block : {64, 256}) {
    Case c{Op::SDD, false, true};
    c.block = block;
    c.dtype = DType::FP16;
    c.tile = wgmma_tile(64, 128, true);
    c.tile.group = 4;
    test::run(c);
  }
  // Fused epilogues: each consumer's own staging buffer and pre-activation load.
  test::check_epilogues(
      [](Case c) {
        c.tile = wgmma_tile(128, 128, true);
        test::run(c);
      },
      {Epilogue::GeluTanh, Epilogue::SiluGrad});
}

TEST_CASE("sm90 products: 192-column tiles (ping-pong 128×192 with 192 accumulators, cooperative 128×192)") {
  if (!hopper()) return;
  // hidden = ffn = 768 (four 192-column tiles): SDD tiles cross block boundaries (B 128: a tile covers
  // one and a half blocks; B 64 three; B 256 two pieces of two blocks), on kRoutings' skewed counts.
  // DDS tiles stay within a block or span whole ones, so 192 is refused there (spec_test).
  int ran = 0;
  for (bool pingpong : {true, false})
    for (auto [op, ta, tb] : kSchedule)
      for (const std::vector<int64_t>& counts : kRoutings) {
        if (op == Op::DDS) continue;
        Case c{op, ta, tb};
        c.hidden = c.ffn = 768;
        c.counts = counts;
        c.tile = wgmma_tile(128, 192, pingpong);
        REQUIRE(test::fits(c));
        test::run(c);
        ++ran;
      }
  CHECK(ran == 12);
  // Chunked staging: one, two or three 64×64 buffers per warpgroup for its six chunks, 5 or 4 stages.
  for (int sc : {1, 2, 3})
    for (auto [op, ta, tb] : kSchedule) {
      if (op == Op::DDS) continue;
      Case c{op, ta, tb};
      c.hidden = c.ffn = 768;
      c.counts = kRoutings[1];
      c.tile = wgmma_tile(128, 192, true, false, sc);
      CHECK(c.tile.stages == (sc == 1 ? 5 : 4));
      test::run(c);
    }
  for (int32_t block : {64, 256})
    for (auto [ta, tb] : kAllTrans) {
      Case c{Op::SDD, ta, tb};
      c.block = block;
      c.hidden = c.ffn = 768;
      c.dtype = DType::FP16;
      c.tile = wgmma_tile(block == 64 ? 64 : 128, 192, true);  // B 64: 64×192, three blocks per tile
      test::run(c);
    }
  // The gradient epilogue (the pre-activation's 64-column chunks loaded block by block) and the plain
  // forward one; the forward activation with its pre-activation store does not fit beside 192
  // accumulators (ptxas spills, and dmoe refuses the build).
  for (Epilogue e : {Epilogue::GeluTanhGrad, Epilogue::SiluGrad}) {
    Case c{Op::SDD, false, true};
    c.hidden = c.ffn = 768;
    c.counts = {700, 0, 129, 1000};
    c.epilogue = e;
    c.tile = wgmma_tile(128, 192, true);
    test::run(c);
  }
}

TEST_CASE("sm90 products: 2-CTA clusters (A multicast to adjacent column tiles)") {
  if (!hopper()) return;
  // Every op and operand layout, both schedules and row-group counts, skewed routings with empty experts
  // (tiles without reduction steps, several cluster tiles per CTA around the ring), a grid capped below the
  // cluster tile count, fp16, B 64 and 256, tile orders, spare capacity, and the fused epilogues.
  std::vector<TileConfig> tiles;
  for (bool pingpong : {false, true})
    for (auto [m, n] : {std::pair{128, 128}, {64, 256}}) {
      tiles.push_back(wgmma_tile(m, n, pingpong));
      tiles.back().cluster = 2;
    }
  // SDD and the three DSDs × schedules × tiles × routings (DDS pairs only n ≤ B / 2).
  CHECK(run_on_routings(tiles, 2) == 24);
  {  // The loaded kernel knows its cluster shape and how many clusters the GPU holds at once.
    Case c{Op::SDD, false, true};
    c.tile = wgmma_tile(128, 128);
    c.tile.cluster = 2;
    const LoadedFunction& fn = test::cache().get(test::spec_of(c));
    CHECK(fn.cluster == 2);
    CHECK(fn.max_active_clusters >= 1);
    CHECK(fn.max_active_clusters <= test::device().properties().sm_count / 2);
    MESSAGE("clusters of 2 resident at once: " << fn.max_active_clusters << " (SMs: "
            << test::device().properties().sm_count << ")");
  }
  for (auto [ta, tb] : kAllTrans)  // every operand layout of every op, DDS included (n = 64 pairs in a block)
    for (Op op : {Op::SDD, Op::DSD, Op::DDS}) {
      Case c{op, ta, tb};
      c.tile = wgmma_tile(128, 64);
      c.tile.cluster = 2;
      test::run(c);
    }
  for (int32_t block : {64, 256})
    for (bool pingpong : {false, true}) {
      Case c{Op::DSD, false, false};
      c.block = block;
      c.dtype = DType::FP16;
      c.tile = wgmma_tile(64, 128, pingpong);
      c.tile.cluster = 2;
      c.tile.group = 4;
      test::run(c);
    }
  test::check_epilogues(
      [](Case c) {
        for (bool pingpong : {false, true}) {
          c.tile = wgmma_tile(128, 128, pingpong);
          c.tile.cluster = 2;
          test::run(c);
        }
      },
      {Epilogue::GeluTanh, Epilogue::SiluGrad});
  Case gated{Op::SDD, false, true};
  gated.gated = true;
  gated.epilogue = Epilogue::Silu;
  gated.save_pre = true;
  gated.tile = wgmma_tile(128, 128, false, true);
  gated.tile.cluster = 2;
  test::run(gated);
}

TEST_CASE("sm90 products: a tile that fits no block fails loudly, though it has no tile to run") {
  if (!hopper()) return;
  // m = 128 rows in 64-row blocks: no tile, and the launch used to return without a word (found by a
  // mistaken test case of the B-multicast experiment, session 14).
  Case c{Op::DSD, true, false};
  c.block = 64;
  c.tile = wgmma_tile(128, 128);
  CHECK_THROWS_WITH_AS(test::run(c), doctest::Contains("m = 128 does not divide the block size = 64"), InvalidArgument);
}

TEST_CASE("sm90 products: chunked output staging (each consumer warpgroup stores 64-column chunks)") {
  if (!hopper()) return;
  // The chunk buffers rotate across tiles (skewed routing: several tiles per CTA), both row splits (m = 128:
  // warpgroups stacked, m = 64: side by side), one and two buffers, the deeper ring they make room for.
  std::vector<TileConfig> tiles;
  for (auto [m, n, sc] : {std::tuple{128, 256, 2}, {128, 256, 1}, {128, 128, 1}, {64, 256, 1}})
    tiles.push_back(wgmma_tile(m, n, false, false, sc));
  CHECK(tiles[0].stages == 4);  // 128×256 whole-tile staging fits 3
  CHECK(run_on_routings(tiles, 2) >= 24);
  for (auto [ta, tb] : kAllTrans)  // every operand layout of every op (DDS: n = 128 within a block)
    for (Op op : {Op::SDD, Op::DSD, Op::DDS}) {
      Case c{op, ta, tb};
      c.tile = wgmma_tile(128, 128, false, false, 1);
      test::run(c);
    }
  for (int32_t block : {64, 256}) {  // fp16, other block sizes, a 2-CTA cluster, tile order 4
    Case c{Op::DSD, false, false};
    c.block = block;
    c.hidden = 512;  // two column tiles of 256 for the cluster's pair
    c.dtype = DType::FP16;
    c.tile = wgmma_tile(64, 256, false, false, 1);
    c.tile.cluster = 2;
    c.tile.group = 4;
    test::run(c);
  }
  // Ping-pong: each warpgroup stages its whole tile chunk by chunk through its own buffers, both row-group
  // counts (m 128: two per tile), one to three buffers, the deeper rings; every operand layout at 128×128.
  std::vector<TileConfig> pp;
  for (auto [m, n, sc] : {std::tuple{128, 128, 1}, {128, 128, 2}, {64, 256, 1}, {128, 64, 1}})
    pp.push_back(wgmma_tile(m, n, true, false, sc));
  CHECK(pp[0].stages == 6);  // whole-tile staging fits 5
  CHECK(run_on_routings(pp, 2) >= 24);
  for (auto [ta, tb] : kAllTrans)
    for (Op op : {Op::SDD, Op::DSD, Op::DDS}) {
      Case c{op, ta, tb};
      c.tile = wgmma_tile(128, 128, true, false, 1);
      test::run(c);
    }
  // Forward activations: act(acc) to C and, when kept, the pre-activation to aux, chunk by chunk through
  // the rotating buffers (two stores per chunk, so an odd buffer count shifts the rotation between tiles).
  const std::initializer_list<Epilogue> forward = {Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu};
  for (const TileConfig& t : {wgmma_tile(128, 128, true, false, 1), wgmma_tile(128, 128, true, false, 2),
                              wgmma_tile(128, 256, false, false, 2), wgmma_tile(128, 256, false, false, 1)})
    test::check_epilogues(
        [&](Case c) {
          c.tile = t;
          test::run(c);
        },
        forward);
  for (bool save_pre : {false, true}) {
    Case c{Op::SDD, false, true};
    c.hidden = c.ffn = 768;
    c.counts = kRoutings[1];
    c.epilogue = Epilogue::GeluTanh;
    c.save_pre = save_pre;
    c.tile = wgmma_tile(128, 192, true, false, 1);
    test::run(c);
  }
}

TEST_CASE("sm90 products: the activation warps (the producer warpgroup's idle warps finish the activation epilogues)") {
  if (!hopper()) return;
  // The consumers stage the raw tile and go on; three warps of the producer warpgroup store the
  // pre-activation, apply the activation in place and store C (gradients: g · act'(pre), pre by TMA chunk
  // by chunk). Both row splits (m 128 stacked, m 64 side by side), every activation and gradient, forward
  // ones with and without the kept pre-activation.
  for (auto [m, n] : {std::pair{128, 256}, {128, 128}, {64, 256}}) {
    TileConfig t = wgmma_tile(m, n);
    t.act_warps = true;
    test::check_epilogues([&](Case c) {
      c.tile = t;
      while (!test::fits(c) && c.tile.stages > 2) --c.tile.stages;  // the gradient's pre-activation chunk
      test::run(c);
    });
  }
  // Many tiles per CTA (the staging buffer goes back and forth between consumers and activation warps
  // across tiles; the skewed routing's empty and one-token experts), fp16, B 64 and 256, a cluster pair
  // with tile order 4.
  for (bool save_pre : {false, true})
    for (auto [block, dtype, cluster] : {std::tuple{128, DType::BF16, 1}, {64, DType::FP16, 1}, {256, DType::BF16, 2}}) {
      Case c{Op::SDD, false, true};
      c.hidden = 512;
      c.ffn = 1024;
      c.counts = kRoutings[1];
      c.block = block;
      c.dtype = dtype;
      c.epilogue = save_pre ? Epilogue::Silu : Epilogue::GeluTanh;
      c.save_pre = save_pre;
      c.tile = wgmma_tile(block == 64 ? 64 : 128, 256);
      c.tile.act_warps = true;
      c.tile.cluster = static_cast<uint8_t>(cluster);
      if (cluster > 1) c.tile.group = 4;
      test::run(c);
      c.epilogue = save_pre ? Epilogue::SiluGrad : Epilogue::GeluTanhGrad;  // the gradient, same tiles
      c.save_pre = false;
      while (!test::fits(c) && c.tile.stages > 2) --c.tile.stages;
      test::run(c);
    }
  // The gated SDD: a and g staged side by side, both kept when asked, h = act(a) · g (none: a · g); both
  // B layouts, 128×128 and 64×256, fp16 and B 64 at the skewed routing.
  int gated = 0;
  for (Epilogue e : {Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu})
    for (bool save_pre : {false, true})
      for (bool tb : {true, false})
        for (auto [m, n] : {std::pair{128, 128}, {64, 256}}) {
          Case c{Op::SDD, false, tb};
          c.hidden = 512;
          c.ffn = 512;
          c.counts = e == Epilogue::Silu ? kRoutings[1] : std::vector<int64_t>{700, 0, 129, 1000};
          c.epilogue = e;
          c.save_pre = save_pre;
          c.gated = true;
          c.tile = wgmma_tile(m, n, false, true);
          c.tile.act_warps = true;
          while (!test::fits(c) && c.tile.stages > 2) --c.tile.stages;
          if (!test::fits(c)) continue;
          test::run(c);
          ++gated;
          if (e == Epilogue::Silu && save_pre && tb && m == 128) {
            c.dtype = DType::FP16;
            c.block = 64;
            c.tile = wgmma_tile(64, 128, false, true);
            c.tile.act_warps = true;
            while (!test::fits(c) && c.tile.stages > 2) --c.tile.stages;
            test::run(c);
          }
        }
  CHECK(gated >= 24);
}

TEST_CASE("sm90 products: DDS tiles wider than a block (adjacent block columns of one expert)") {
  if (!hopper()) return;
  // Both A layouts with S; 2 and 4 blocks per tile (B 128 and 64), both schedules, skewed routings with
  // empty experts and spare capacity, fp16, tile orders, chunked staging; the expert boundaries fall
  // between tiles (ffn = 2 or 4 tiles' worth).
  int ran = 0;
  for (bool ta : {false, true})
    for (int32_t block : {128, 64})
      for (auto [m, n, pp] : {std::tuple{128, 256, false}, {64, 256, true}, {128, 128, false}})
        for (const std::vector<int64_t>& counts : kRoutings) {
          Case c{Op::DDS, ta, false};
          c.block = block;
          c.hidden = 256;
          c.ffn = 512;
          c.counts = counts;
          c.tile = wgmma_tile(m, n, pp);
          c.extra_block_rows = 2;
          if (c.tile.n <= block) continue;  // not wide
          REQUIRE(test::fits(c));
          test::run(c);
          ++ran;
        }
  CHECK(ran == 20);
  Case c{Op::DDS, false, false};
  c.dtype = DType::FP16;
  c.ffn = 512;
  c.tile = wgmma_tile(128, 256, false, false, 1);
  c.tile.group = 1;
  test::run(c);
  c.tile = wgmma_tile(128, 256);
  c.tile.group = 16;
  test::run(c);
}

TEST_CASE("sm90 products: DSD NN scattering its rows to token rows through a row map") {
  if (!hopper()) return;
  // Both schedules and row-group counts, tiles 64 to 256 wide, a skewed routing with empty experts (several
  // tiles per CTA), spare capacity past T_pad (map −1), fp16, block sizes 64 and 256, a 2-CTA cluster.
  int ran = 0;
  for (bool pingpong : {false, true})
    for (auto [m, n] : {std::pair{128, 128}, {64, 256}, {128, 64}, {128, 256}})
      for (const std::vector<int64_t>& counts : kRoutings) {
        Case c{Op::DSD, false, false};
        c.hidden = 512;
        c.ffn = 512;
        c.counts = counts;
        c.tile = wgmma_tile(m, n, pingpong);
        c.scatter = true;
        c.extra_block_rows = 2;
        if (!test::fits(c)) continue;
        test::run(c);
        ++ran;
      }
  CHECK(ran >= 12);
  for (int32_t block : {64, 256}) {
    Case c{Op::DSD, false, false};
    c.block = block;
    c.ffn = 512;
    c.dtype = DType::FP16;
    c.scatter = true;
    test::run(with_default_tile(c));
  }
  Case c2{Op::DSD, false, false};
  c2.tile = wgmma_tile(128, 128);
  c2.tile.cluster = 2;
  c2.scatter = true;
  test::run(c2);
}

TEST_CASE("sm90 products: SDD gathering its A rows through a row map") {
  if (!hopper()) return;
  // Both B layouts, both schedules and row-group counts, fp16, block sizes 64 and 256, a skewed routing
  // with an empty expert (several tiles per CTA around the ring), the fused epilogues with the kept
  // pre-activation, and spare capacity past T_pad (its map entries −1, never read).
  for (bool tb : {true, false})
    for (bool pingpong : {false, true})
      for (auto [m, n] : {std::pair{128, 128}, {64, 256}, {128, 256}}) {
        Case c{Op::SDD, false, tb};
        c.hidden = 512;
        c.ffn = 512;
        c.counts = {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300};
        c.tile = wgmma_tile(m, n, pingpong);
        c.gather = true;
        c.extra_block_rows = 3;
        if (!test::fits(c)) continue;
        test::run(c);
      }
  for (int32_t block : {64, 256}) {
    Case c{Op::SDD, false, true};
    c.block = block;
    c.ffn = 512;
    c.dtype = DType::FP16;
    c.gather = true;
    test::run(with_default_tile(c));
  }
  test::check_epilogues(
      [](Case c) {
        c.gather = true;
        for (bool pingpong : {false, true}) {
          c.tile = wgmma_tile(128, pingpong ? 128 : 256, pingpong);
          test::run(c);
        }
      },
      {Epilogue::GeluTanh, Epilogue::Silu});
}

TEST_CASE("sm90 products: the gated SDD (both products and the GLU in one pass)") {
  if (!hopper()) return;
  // Every forward activation (none: the bilinear GLU) with and without the kept pre-activations, both B
  // layouts, the cooperative and ping-pong tiles that hold two accumulator sets, fp16, block sizes 64 and
  // 256, a skewed routing with empty experts, and the gather.
  for (Epilogue e : {Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu, Epilogue::Relu})
    for (bool save_pre : {false, true}) {
      Case c{Op::SDD, false, true};
      c.hidden = 512;
      c.counts = {700, 0, 129, 1000};
      c.epilogue = e;
      c.save_pre = save_pre;
      c.gated = true;
      c.tile = wgmma_tile(128, 128, false, true);
      test::run(c);
    }
  int ran = 0;
  for (bool tb : {true, false})
    for (bool pingpong : {false, true})
      for (auto [m, n] : {std::pair{128, 128}, {64, 256}, {128, 64}, {64, 128}}) {
        Case c{Op::SDD, false, tb};
        c.hidden = 512;
        c.ffn = 512;
        c.counts = {3000, 0, 2100, 1, 700, 60, 0, 1900, 129, 300};
        c.epilogue = Epilogue::Silu;
        c.save_pre = true;
        c.gated = true;
        c.tile = wgmma_tile(m, n, pingpong, true);
        if (!test::fits(c)) continue;
        test::run(c);
        ++ran;
      }
  CHECK(ran >= 5);
  for (int32_t block : {64, 256}) {
    Case c{Op::SDD, false, true};
    c.block = block;
    c.ffn = 512;
    c.dtype = DType::FP16;
    c.epilogue = Epilogue::GeluTanh;
    c.save_pre = true;
    c.gated = true;
    c.tile = wgmma_tile(block == 64 ? 64 : 128, 128, false, true);
    test::run(c);
  }
  Case g{Op::SDD, false, true};
  g.epilogue = Epilogue::Silu;
  g.save_pre = true;
  g.gated = true;
  g.gather = true;
  g.tile = wgmma_tile(128, 128, false, true);
  test::run(g);
}

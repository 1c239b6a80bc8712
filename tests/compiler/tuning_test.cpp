// The tuner's search space and its database (the CPU-side parts of autotuning).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <unistd.h>

#include "dmoe/tuning.hpp"
#include "test_dirs.hpp"

using namespace dmoe;

TEST_CASE("tuning candidates: the default first, every family that runs on the arch, all valid, no duplicates") {
  const KernelSpec base = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a);
  const std::vector<KernelSpec> c = tuning_candidates(base);
  REQUIRE(!c.empty());
  CHECK(c.front() == base);
  std::set<std::string> names;
  int wgmma = 0, mma = 0, simt = 0;
  for (const KernelSpec& k : c) {
    CHECK_NOTHROW(validate(k));
    CHECK(tuning_problem(k) == tuning_problem(base));  // only the tile varies
    names.insert(kernel_name(k));
    wgmma += k.tile.mma == Mma::Wgmma, mma += k.tile.mma == Mma::MmaSync, simt += k.tile.mma == Mma::Simt;
  }
  CHECK(names.size() == c.size());
  CHECK(wgmma >= 10);  // 128x256 s2..3, 128x128 s2..6, 128x64, 64x256, 64x128 …
  // The tile order: groups 1, 4 and 16 at each wgmma shape's deepest ring only, the default 8 elsewhere.
  int grouped = 0, shapes = 0, clustered = 0, chunked[2] = {0, 0};
  for (const KernelSpec& k : c) {
    if (k.tile.mma != Mma::Wgmma) {
      CHECK(k.tile.group == TileConfig::kDefaultGroup);
      continue;
    }
    const TileConfig deepest = wgmma_tile(k.tile.m, k.tile.n, k.tile.pingpong);
    if (k.tile.store_chunks > 0) {  // chunked staging: from the whole-tile ring's depth down its own rings
      ++chunked[k.tile.pingpong];
      CHECK(k.tile.stages >= deepest.stages);
      CHECK(k.tile.stages <= wgmma_tile(k.tile.m, k.tile.n, k.tile.pingpong, false, k.tile.store_chunks).stages);
      CHECK(k.tile.group == TileConfig::kDefaultGroup);
      CHECK(k.tile.cluster == 1);
    } else if (k.tile.cluster != 1) {  // 2-CTA clusters: each schedule's deepest ring, the default order
      ++clustered;
      CHECK(k.tile.cluster == 2);
      CHECK(k.tile.stages == deepest.stages);
      CHECK(k.tile.group == TileConfig::kDefaultGroup);
      KernelSpec alone = k;
      alone.tile.cluster = 1;
      CHECK(std::find(c.begin(), c.end(), alone) != c.end());
    } else if (k.tile.group != TileConfig::kDefaultGroup) {
      ++grouped;
      CHECK(k.tile.stages == deepest.stages);
    } else if (k.tile.stages == deepest.stages) {
      ++shapes;
      for (int g : {1, 4, 16}) {
        KernelSpec v = k;
        v.tile.group = static_cast<uint8_t>(g);
        CHECK(std::find(c.begin(), c.end(), v) != c.end());
      }
    }
  }
  CHECK(shapes >= 4);
  CHECK(grouped == 3 * shapes);
  CHECK(clustered == shapes);  // mb-356m's column tiles pair up at every shape (ffn 4096)
  CHECK(chunked[0] >= 4);  // both schedules' chunked rings
  CHECK(chunked[1] >= 4);
  // The ping-pong schedule: at the tiles one warpgroup can hold (m·n ≤ 16384 here: 128×192 does not
  // divide mb-356m), its two deepest whole-tile rings.
  std::set<std::pair<int, int>> pingpong;
  for (const KernelSpec& k : c)
    if (k.tile.pingpong && k.tile.store_chunks == 0) {
      CHECK(k.tile.m * k.tile.n <= 16384);
      CHECK(k.tile.stages + 1 >= wgmma_tile(k.tile.m, k.tile.n, true).stages);
      pingpong.insert({k.tile.m, k.tile.n});
    }
  CHECK(pingpong == std::set<std::pair<int, int>>{{128, 128}, {128, 64}, {64, 256}, {64, 128}, {64, 64}});
  CHECK(mma >= 16);
  CHECK(simt == 1);
  // Ampere: no wgmma; DDS keeps its tile within a block.
  const KernelSpec a = default_spec(preset("mb-356m"), Op::DDS, false, false, Arch::SM86);
  for (const KernelSpec& k : tuning_candidates(a)) {
    CHECK(k.tile.mma != Mma::Wgmma);
    CHECK(k.tile.n <= 128);
  }
}

TEST_CASE("tuning keys: problem without the tile, power-of-two token buckets") {
  KernelSpec k = default_spec(preset("mb-356m"), Op::DSD, true, false, Arch::SM90a);
  CHECK(tuning_problem(k) == "dsd_tn_bf16_b128_h1024_f4096_e64_sm90a");
  k.epilogue = Epilogue::None;
  CHECK(token_bucket(1) == 1024);
  CHECK(token_bucket(1024) == 1024);
  CHECK(token_bucket(1025) == 2048);
  CHECK(token_bucket(16384) == 16384);
  TuningKey key{"NVIDIA H200", 132, 13000, "13.0", tuning_problem(k), token_bucket(16000)};
  CHECK(key.str() == "NVIDIA H200|132sm|drv13000|nvrtc13.0|dsd_tn_bf16_b128_h1024_f4096_e64_sm90a|t16384");
}

TEST_CASE("tuning database: save, reload, merge keeps the faster record, corrupt files are named") {
  const test::TempDir tmp;
  const std::filesystem::path dir = tmp.path;
  const std::filesystem::path file = dir / "tuning.json";
  const TuningKey a{"NVIDIA H200", 132, 13000, "13.0", "sdd_nt_bf16_b128_h1024_f4096_e64_sm90a", 16384};
  TuningKey b = a;
  b.tokens = 65536;
  {
    TuningDb db(file);  // missing file: empty
    CHECK(db.entries().empty());
    db.put(a, {wgmma_tile(128, 128), 0.21, 0.25, "k1"});
    db.put(b, {TileConfig{128, 128, 32, 8, 3, Mma::MmaSync}, 0.9, 1.0, "k2"});
    db.save();
  }
  for (const auto& e : std::filesystem::directory_iterator(dir))  // no temporary left behind
    CHECK(e.path().filename() == "tuning.json");
  TuningDb loaded(file);
  REQUIRE(loaded.find(a));
  CHECK(loaded.find(a)->tile == wgmma_tile(128, 128));
  CHECK(loaded.find(a)->ms == doctest::Approx(0.21));
  CHECK(loaded.find(b)->tile == TileConfig{128, 128, 32, 8, 3, Mma::MmaSync});
  TuningKey other = a;
  other.gpu = "NVIDIA A100";
  CHECK_FALSE(loaded.find(other));

  TuningDb incoming(dir / "other.json");
  incoming.put(a, {wgmma_tile(128, 256), 0.30, 0.25, "slower"});  // slower: ignored
  incoming.put(b, {wgmma_tile(64, 256), 0.50, 1.0, "faster"});    // faster: wins
  incoming.put(other, {wgmma_tile(128, 128), 0.4, 0.4, "new"});   // new key: added
  CHECK(loaded.merge(incoming) == 2);
  CHECK(loaded.find(a)->kernel == "k1");
  CHECK(loaded.find(b)->kernel == "faster");
  CHECK(loaded.find(other)->kernel == "new");

  std::ofstream(dir / "bad.json") << "{\"version\": 1, \"entries\": {\"x\": {\"tile\": 3}}}";
  CHECK_THROWS_WITH_AS(TuningDb(dir / "bad.json"), doctest::Contains("bad.json"), InvalidArgument);
  std::ofstream(dir / "v2.json") << "{\"version\": 2, \"entries\": {}}";
  CHECK_THROWS_WITH_AS(TuningDb(dir / "v2.json"), doctest::Contains("version 2"), InvalidArgument);
  CHECK(TuningDb::tile_string(wgmma_tile(128, 256)) == "wgmma 128x256x64 s3");
}

TEST_CASE("tuning database: the wgmma group round-trips; records written before it was a field load as 8") {
  const test::TempDir tmp;
  const std::filesystem::path file = tmp.path / "tuning.json";
  const TuningKey a{"NVIDIA H200", 132, 13000, "13.0", "sdd_nt_bf16_b128_h1024_f4096_e64_sm90a", 16384};
  TuningKey b = a;
  b.tokens = 65536;
  TileConfig g4 = wgmma_tile(128, 256), g1 = wgmma_tile(128, 128);
  g4.group = 4, g1.group = 1;
  CHECK(TuningDb::tile_string(g4) == "wgmma 128x256x64 s3 g4");
  {
    TuningDb db(file);
    db.put(a, {g4, 0.2, 0.25, "k4"});
    db.put(b, {g1, 0.3, 0.35, "k1"});
    db.save();
  }
  const TuningDb loaded(file);
  REQUIRE(loaded.find(a));
  REQUIRE(loaded.find(b));
  CHECK(loaded.find(a)->tile == g4);
  CHECK(loaded.find(b)->tile == g1);

  // A database from before the field: no "group" in the tile.
  const std::filesystem::path old = tmp.path / "old.json";
  std::ofstream(old) << R"({"version": 1, "entries": {")" << a.str()
                     << R"(": {"tile": {"mma": "wgmma", "m": 128, "n": 256, "k": 64, "warps": 12, "stages": 3},
                        "ms": 0.2, "default_ms": 0.25, "kernel": "k"}}})";
  const TuningDb before(old);
  REQUIRE(before.find(a));
  CHECK(before.find(a)->tile == wgmma_tile(128, 256));
  CHECK(before.find(a)->tile.group == 8);
  CHECK_FALSE(before.find(a)->tile.pingpong);
  CHECK(before.find(a)->tile.cluster == 1);  // and before clusters: one CTA
}

namespace {

// `tile` recorded under `key`, saved, and read back by a new database from the same file.
TileConfig round_trip(const TuningKey& key, const TileConfig& tile) {
  const test::TempDir tmp;
  const std::filesystem::path file = tmp.path / "tuning.json";
  {
    TuningDb db(file);
    db.put(key, {tile, 0.2, 0.3, "k"});
    db.save();
  }
  const TuningDb loaded(file);
  REQUIRE(loaded.find(key));
  return loaded.find(key)->tile;
}

}  // namespace

TEST_CASE("tuning database: the cluster size round-trips and is shown") {
  const TuningKey a{"NVIDIA H200", 132, 13000, "13.0", "sdd_nt_bf16_b128_h1024_f4096_e64_sm90a", 16384};
  TileConfig c2 = wgmma_tile(128, 128, true);
  c2.cluster = 2;
  CHECK(TuningDb::tile_string(c2) == "wgmma 128x128x64 s5 pp c2");
  const TileConfig loaded = round_trip(a, c2);
  CHECK(loaded == c2);
  CHECK(loaded.cluster == 2);
}

TEST_CASE("tuning database: the ping-pong schedule round-trips and is shown") {
  const TuningKey a{"NVIDIA H200", 132, 13000, "13.0", "sdd_nt_bf16_b128_h512_f2048_e64_gelu_sm90a", 65536};
  TileConfig pp = wgmma_tile(128, 128, true);
  pp.group = 4;
  CHECK(TuningDb::tile_string(pp) == "wgmma 128x128x64 s5 g4 pp");
  // Chunked staging is named: two candidates that differ only in it must not print alike.
  CHECK(TuningDb::tile_string(wgmma_tile(128, 256, false, false, 2)) == "wgmma 128x256x64 s4 st2");
  CHECK(TuningDb::tile_string(wgmma_tile(128, 192, true, false, 1)) == "wgmma 128x192x64 s5 pp st1");
  CHECK(round_trip(a, pp) == pp);
}

TEST_CASE("activation warps: tuning candidates of the activation SDDs only; round-trips and is shown") {
  const KernelSpec gelu = default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a, Epilogue::GeluTanh);
  for (Epilogue e : {Epilogue::GeluTanh, Epilogue::GeluTanhGrad}) {
    int aw = 0;
    for (const KernelSpec& k : tuning_candidates(default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a, e)))
      if (k.tile.act_warps) {
        ++aw;
        CHECK_FALSE(k.tile.pingpong);
        CHECK(k.tile.store_chunks == 0);
        CHECK(k.tile.cluster == 1);
      }
    CHECK(aw >= 8);  // the deepest two rings and three tile orders at each cooperative shape that fits
  }
  for (const KernelSpec& k : tuning_candidates(default_spec(preset("mb-356m"), Op::SDD, false, true, Arch::SM90a)))
    CHECK_FALSE(k.tile.act_warps);
  // The gated SDD: its g tile takes a stage (128×128: 3 instead of 4).
  const KernelSpec glu = default_spec(preset("mixtral-8x7b"), Op::SDD, false, true, Arch::SM90a, Epilogue::Silu, true);
  int gated_aw = 0;
  for (const KernelSpec& k : tuning_candidates(glu))
    if (k.tile.act_warps) {
      ++gated_aw;
      if (k.tile.m == 128 && k.tile.n == 128) CHECK(k.tile.stages <= 3);
    }
  CHECK(gated_aw >= 4);
  TileConfig t = wgmma_tile(128, 256);
  t.act_warps = true;
  CHECK(TuningDb::tile_string(t) == "wgmma 128x256x64 s3 aw");
  const TuningKey a{"NVIDIA H200", 132, 13000, "13.0", tuning_problem(gelu), 16384};
  CHECK(round_trip(a, t) == t);
}

TEST_CASE("apply_tuning: the record's tile where the exact spec accepts it, the spec's own tile elsewhere") {
  const KernelSpec dsd = default_spec(preset("mb-356m"), Op::DSD, false, false, Arch::SM90a);
  CHECK(apply_tuning(dsd, std::nullopt) == dsd);
  TuningRecord chunked{wgmma_tile(128, 256, false, false, 2), 0.2, 0.21, ""};
  const KernelSpec tuned = apply_tuning(dsd, chunked);
  CHECK(tuned.tile == chunked.tile);
  CHECK(tuning_problem(tuned) == tuning_problem(dsd));
  // The layer's dX form scatters its rows (the same tuning problem): it refuses chunked staging and keeps
  // its default; a tile it accepts applies (session 17: a database with this record stopped the mb-356m
  // layer from building).
  KernelSpec scatter = dsd;
  scatter.scatter = true;
  CHECK(tuning_problem(scatter) == tuning_problem(dsd));
  CHECK(apply_tuning(scatter, chunked) == scatter);
  TuningRecord g4{dsd.tile, 0.2, 0.21, ""};
  g4.tile.group = 4;
  CHECK(apply_tuning(scatter, g4).tile == g4.tile);
  CHECK(apply_tuning(scatter, g4).scatter);
  // A record no longer valid (another dmoe version's tile): the spec's own.
  TuningRecord bad{wgmma_tile(128, 192), 0.2, 0.21, ""};  // 192 does not divide hidden 1024
  CHECK(apply_tuning(dsd, bad) == dsd);
}

TEST_CASE("compile_candidates: input order, refusals reported not thrown, progress once per spec") {
  const test::TempDir tmp;
  Compiler compiler({tmp.path});
  KernelSpec simt = default_spec(preset("tiny"), Op::SDD, false, true, Arch::SM86);
  simt.tile = TileConfig{64, 64, 32, 8, 1, Mma::Simt};
  KernelSpec invalid = simt;
  invalid.tile.m = 48;  // not a tile validate() accepts
  KernelSpec other = simt;
  other.tile.n = 32;
  REQUIRE_NOTHROW(validate(other));
  const std::vector<KernelSpec> specs{simt, invalid, other, simt};
  std::vector<size_t> seen;
  const std::vector<CandidateBuild> builds =
      compile_candidates(compiler, specs, 2, [&](size_t done, size_t n) {
        CHECK(n == specs.size());
        seen.push_back(done);
      });
  REQUIRE(builds.size() == specs.size());
  CHECK(seen == std::vector<size_t>{1, 2, 3, 4});
  for (size_t i : {0, 2, 3}) {
    REQUIRE(builds[i].kernel);
    CHECK(builds[i].error.empty());
    CHECK(builds[i].kernel->spec == specs[i]);
  }
  CHECK(builds[0].kernel == builds[3].kernel);  // one compile per spec
  CHECK_FALSE(builds[1].kernel);
  CHECK(!builds[1].error.empty());
  CHECK(builds[1].error.find('\n') == std::string::npos);
}

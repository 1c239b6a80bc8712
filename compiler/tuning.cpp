#include "dmoe/tuning.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "dmoe/args.cuh"
#include "dmoe/disk_cache.hpp"
#include "json.hpp"

namespace dmoe {
namespace {

json::Value tile_json(const TileConfig& t) {
  json::Value v = json::Object{};
  v.set("mma", std::string(to_string(t.mma)));
  v.set("m", int64_t{t.m});
  v.set("n", int64_t{t.n});
  v.set("k", int64_t{t.k});
  v.set("warps", int64_t{t.warps});
  v.set("stages", int64_t{t.stages});
  v.set("group", int64_t{t.group});
  v.set("pingpong", t.pingpong);
  v.set("cluster", int64_t{t.cluster});
  v.set("store_chunks", int64_t{t.store_chunks});
  v.set("act_warps", t.act_warps);
  return v;
}

TileConfig tile_from_json(const json::Value& v) {
  TileConfig t;
  t.mma = parse_mma(v["mma"].get_string());
  auto u16 = [&](const char* k) { return static_cast<uint16_t>(v[k].get_int()); };
  auto u8 = [&](const char* k) { return static_cast<uint8_t>(v[k].get_int()); };
  t.m = u16("m"), t.n = u16("n"), t.k = u16("k"), t.warps = u8("warps"), t.stages = u8("stages");
  if (v.find("group")) t.group = u8("group");  // databases written before the group was a field: 8
  if (v.find("pingpong")) t.pingpong = v["pingpong"].get_bool();  // before the schedule was: cooperative
  if (v.find("cluster")) t.cluster = u8("cluster");  // before clusters: 1
  if (v.find("store_chunks")) t.store_chunks = u8("store_chunks");  // before chunked staging: 0
  if (v.find("act_warps")) t.act_warps = v["act_warps"].get_bool();  // before the activation warps: off
  return t;
}

}  // namespace

std::vector<KernelSpec> tuning_candidates(const KernelSpec& base) {
  validate(base);
  std::vector<KernelSpec> out{base};
  auto add = [&](const TileConfig& t) {
    KernelSpec k = base;
    k.tile = t;
    try {
      validate(k);
    } catch (const InvalidArgument&) {
      return;
    }
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  };
  // The rings of `deepest` from `first` stages up to its own.
  auto add_rings = [&](const TileConfig& deepest, int first) {
    for (int s = first; s <= deepest.stages; ++s) {
      TileConfig t = deepest;
      t.stages = static_cast<uint8_t>(s);
      add(t);
    }
  };
  // The tile orders other than the default, searched at the deepest ring only (they would multiply the
  // candidates otherwise).
  auto add_groups = [&](const TileConfig& deepest) {
    for (int g : {1, 4, 16}) {
      TileConfig t = deepest;
      t.group = static_cast<uint8_t>(g);
      add(t);
    }
  };
  if (base.arch == Arch::SM90a)
    for (int m : {128, 64})
      for (int n : {256, 192, 128, 64}) {
        const TileConfig deepest = wgmma_tile(m, n, false, base.gated);
        add_rings(deepest, 2);
        add_groups(deepest);
        // The ping-pong schedule: its two deepest rings (each consumer holds a staging buffer, so fewer
        // stages fit), and the tile orders at the deepest.
        const TileConfig pp = wgmma_tile(m, n, true, base.gated);
        add_rings(pp, std::max(2, int(pp.stages) - 1));
        add_groups(pp);
        // 2-CTA clusters (A multicast), at each schedule's deepest ring with the default tile order.
        for (TileConfig t : {deepest, pp}) {
          t.cluster = 2;
          add(t);
        }
        // Chunked output staging, for both schedules: the rings it makes room for, and the whole-tile
        // ring's depth (the forward activation's two outputs stream chunk by chunk there too). add refuses
        // it where validate does: gradient epilogues, the gated SDD, the scatter.
        for (int sc : {1, 2}) {
          add_rings(wgmma_tile(m, n, false, base.gated, sc), deepest.stages);
          add_rings(wgmma_tile(m, n, true, base.gated, sc), pp.stages);
        }
        // The activation warps (cooperative activation SDDs only; add refuses the rest): the
        // deepest two rings and the tile orders.
        TileConfig aw = deepest;
        aw.act_warps = true;
        add_rings(aw, std::max(2, int(aw.stages) - 1));
        add_groups(aw);
      }
  for (int m : {128, 64})
    for (int n : {128, 64})
      for (int k : {32, 64})
        for (int warps : {8, 4}) {
          TileConfig deepest = mma_sync_tile(m, n, base.arch, k);
          deepest.warps = static_cast<uint8_t>(warps);
          add_rings(deepest, 2);
        }
  add(TileConfig{64, 64, 32, 8, 1, Mma::Simt});
  return out;
}

std::vector<CandidateBuild> compile_candidates(Compiler& compiler, std::span<const KernelSpec> specs, int jobs,
                                               const std::function<void(size_t, size_t)>& progress) {
  std::vector<CandidateBuild> out(specs.size());
  std::atomic<size_t> next{0};
  size_t done = 0;
  std::mutex progress_mutex;
  auto worker = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      try {
        out[i].kernel = compiler.get(specs[i]);
      } catch (const std::exception& e) {
        const std::string what = e.what();
        out[i].error = what.substr(0, what.find('\n'));
      }
      std::lock_guard lock(progress_mutex);
      ++done;
      if (progress) progress(done, specs.size());
    }
  };
  const int n = jobs > 0 ? jobs : int(std::max(1u, std::thread::hardware_concurrency()));
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < std::min<int>(n, int(specs.size())); ++t) pool.emplace_back(worker);
  }  // joins
  return out;
}

int64_t token_bucket(int64_t tokens) {
  int64_t b = 1024;
  while (b < tokens) b *= 2;
  return b;
}

std::string TuningKey::str() const {
  return fmt::format("{}|{}sm|drv{}|nvrtc{}|{}|t{}", gpu, sm_count, driver, nvrtc, problem, tokens);
}

// A variant may refuse the record's tile, or the record may come from another dmoe version.
KernelSpec apply_tuning(const KernelSpec& k, const std::optional<TuningRecord>& r) {
  return r ? with_tile_if_valid(k, r->tile) : k;
}

std::string TuningDb::tile_string(const TileConfig& t) {
  if (t.mma == Mma::Wgmma)
    return fmt::format("wgmma {}x{}x{} s{}{}{}{}{}{}", t.m, t.n, t.k, t.stages,
                       t.group == TileConfig::kDefaultGroup ? "" : fmt::format(" g{}", t.group),
                       t.pingpong ? " pp" : "", t.store_chunks > 0 ? fmt::format(" st{}", t.store_chunks) : "",
                       t.cluster > 1 ? fmt::format(" c{}", t.cluster) : "", t.act_warps ? " aw" : "");
  return fmt::format("{} {}x{}x{} w{} s{}", t.mma == Mma::MmaSync ? "mma" : "simt", t.m, t.n, t.k, t.warps, t.stages);
}

std::filesystem::path TuningDb::default_path() { return DiskCache::default_root() / "tuning.json"; }

TuningDb::TuningDb(std::filesystem::path file) : file_(std::move(file)) {
  std::ifstream in(file_, std::ios::binary);
  if (!in) return;  // no database yet
  std::stringstream text;
  text << in.rdbuf();
  try {
    const json::Value root = json::parse(text.str());
    if (root["version"].get_int() != 1)
      throw InvalidArgument(fmt::format("version {} is not supported (expected 1)", root["version"].get_int()));
    for (const auto& [key, v] : root["entries"].get_object()) {
      TuningRecord r;
      r.tile = tile_from_json(v["tile"]);
      r.ms = v["ms"].get_double();
      r.default_ms = v["default_ms"].get_double();
      r.kernel = v["kernel"].get_string();
      entries_[key] = r;
    }
  } catch (const std::exception& e) {
    throw InvalidArgument(fmt::format("tuning database {} is not readable: {}", file_.string(), e.what()));
  }
}

std::optional<TuningRecord> TuningDb::find(const TuningKey& key) const {
  const auto it = entries_.find(key.str());
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void TuningDb::put(const TuningKey& key, const TuningRecord& r) { entries_[key.str()] = r; }

size_t TuningDb::merge(const TuningDb& other) {
  size_t changed = 0;
  for (const auto& [key, r] : other.entries_) {
    auto it = entries_.find(key);
    if (it == entries_.end() || r.ms < it->second.ms) {
      entries_[key] = r;
      ++changed;
    }
  }
  return changed;
}

void TuningDb::save() const { save_as(file_); }

void TuningDb::save_as(const std::filesystem::path& target) const {
  json::Value entries = json::Object{};
  for (const auto& [key, r] : entries_) {
    json::Value v = json::Object{};
    v.set("tile", tile_json(r.tile));
    v.set("ms", r.ms);
    v.set("default_ms", r.default_ms);
    v.set("kernel", r.kernel);
    entries.set(key, std::move(v));
  }
  json::Value root = json::Object{};
  root.set("version", int64_t{1});
  root.set("entries", std::move(entries));
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  const std::filesystem::path tmp = target.string() + fmt::format(".tmp.{}", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << root.dump(2) << '\n';
    out.flush();
    if (!out) throw std::runtime_error(fmt::format("cannot write the tuning database {}", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error(fmt::format("cannot publish the tuning database {}: {}", target.string(), ec.message()));
  }
}

}  // namespace dmoe

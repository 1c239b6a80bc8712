// dmoe/tuning.hpp — what the autotuner searches and where it remembers the answers.
//
// The search space of a product spec is its tile configuration (the kernel family, tile shape, warps,
// pipeline depth and, for wgmma, the tile order); the block size is a property of the layer and is searched by running the layer's
// products at each block size. Results live in a small JSON database under the cache directory, keyed by
// the device (GPU name, SM count, driver and NVRTC versions), the spec without its tile, and a bucket of
// token counts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dmoe/compiler.hpp"
#include "dmoe/spec.hpp"

namespace dmoe {

// Every valid tile for the spec's op, shape and arch, the spec's own tile first: the wgmma family on
// sm_90a (m 64/128, n 64/128/256, every ring depth from 2 to the deepest that fits, and at the deepest
// ring the tile orders group 1, 4 and 16 besides the default 8), mma.sync on every
// arch (m, n 64/128, k 32/64, 4 or 8 warps, rings 2..5 that fit), and the SIMT default. Invalid
// combinations are filtered by validate(); the list has no duplicates.
std::vector<KernelSpec> tuning_candidates(const KernelSpec& base);

// One candidate's build: the compiled kernel, or why it was refused (the first line of the error: spills,
// serialized wgmma, an NVRTC error, an invalid spec).
struct CandidateBuild {
  std::shared_ptr<const CompiledKernel> kernel;  // null when refused
  std::string error;
};

// Compiles (or loads from the compiler's memory and disk caches) every spec on `jobs` threads (0: every
// core); results follow the input order, and a refusal is reported in its entry, never thrown. NVRTC is
// most of a tuning run's set-up, so `dmoe tune` builds all its candidates this way before timing any.
// `progress(done, total)`, when given, is called after each spec, one call at a time; it must not throw.
std::vector<CandidateBuild> compile_candidates(Compiler&, std::span<const KernelSpec>, int jobs = 0,
                                               const std::function<void(size_t, size_t)>& progress = {});

// Token counts share a tuned tile within a power-of-two bucket (at least 1024).
int64_t token_bucket(int64_t tokens);

struct TuningKey {
  std::string gpu;       // device name, e.g. "NVIDIA H200"
  int sm_count = 0;
  int driver = 0;        // e.g. 13000
  std::string nvrtc;     // e.g. "13.0"
  std::string problem;   // tuning_problem(spec)
  int64_t tokens = 0;    // token_bucket(T)
  std::string str() const;  // the database key
};

struct TuningRecord {
  TileConfig tile;
  double ms = 0;          // median time of the chosen tile
  double default_ms = 0;  // the default tile's, same run
  std::string kernel;     // kernel_name of the chosen spec
};

// The spec with the record's tile, if that tile is valid for this exact spec; else the spec as given.
// A record names a tuning problem (tuning_problem), which leaves out variants that share the product's
// tuning (the layer's scatter and gather forms): a tile tuned on the plain product may be one the variant
// refuses (chunked staging with the scatter), and the variant then keeps its own tile.
KernelSpec apply_tuning(const KernelSpec&, const std::optional<TuningRecord>&);

// The database: one JSON object {"version": 1, "entries": {key: record}} in a file. Loading a missing
// file gives an empty database; a malformed one throws InvalidArgument naming the file and the problem.
// save() writes a temporary file and renames it over the target, so readers never see half a file.
class TuningDb {
 public:
  explicit TuningDb(std::filesystem::path file);
  static std::filesystem::path default_path();  // <DiskCache::default_root()>/tuning.json

  const std::filesystem::path& file() const { return file_; }
  std::optional<TuningRecord> find(const TuningKey&) const;
  void put(const TuningKey&, const TuningRecord&);
  // Adds the other database's entries; where both have a key, the faster record wins. Returns how many
  // entries were added or replaced.
  size_t merge(const TuningDb& other);
  void save() const;
  void save_as(const std::filesystem::path&) const;
  const std::map<std::string, TuningRecord>& entries() const { return entries_; }

  // "wgmma 128x256x64 s3", "wgmma 128x256x64 s3 g4" (a group other than 8), "mma 128x128x32 w8 s5", …
  static std::string tile_string(const TileConfig&);

 private:
  std::filesystem::path file_;
  std::map<std::string, TuningRecord> entries_;
};

}  // namespace dmoe

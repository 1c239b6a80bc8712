// dmoe/disk_cache.hpp — the on-disk kernel cache shared by every process of a user.
//
// One directory per entry, <root>/<key>/ with kernel.cu, kernel.cubin, kernel.ptx and meta.json. Entries
// are published by renaming a complete private temporary directory into place, so readers take no lock
// and never see a partial entry; losing a publishing race to another process is harmless. meta.json
// records the size and SHA-256 of each file: a truncated or corrupt entry is removed and reported as a
// miss, never an error. An unwritable cache degrades to memory-only with one warning per process.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dmoe {

struct CacheEntry {
  std::string key;
  std::filesystem::path dir;
  std::string source;     // kernel.cu
  std::string cubin;      // kernel.cubin
  std::string ptx;        // kernel.ptx
  std::string meta_json;  // meta.json as stored, including the "integrity" field
};

struct CacheEntryInfo {
  std::string key;
  std::string name;  // meta.json's "name" field, or "" when absent
  uint64_t bytes = 0;
  std::filesystem::file_time_type last_used;  // mtime of meta.json, refreshed by every load
  std::filesystem::path dir;
};

// Safe to use from many threads and processes at once. Keys are 32 lowercase hex digits; any other
// key throws InvalidArgument, so no key can name a path outside the root.
class DiskCache {
 public:
  // root empty → default_root(). max_bytes 0 → default_max_bytes(). A relative root is made absolute.
  explicit DiskCache(std::filesystem::path root = {}, uint64_t max_bytes = 0);

  // $DMOE_CACHE_DIR, else $XDG_CACHE_HOME/dmoe (if absolute), else $HOME/.cache/dmoe.
  static std::filesystem::path default_root();
  // $DMOE_CACHE_MAX_SIZE parsed by parse_size (0: unlimited), else 4 GiB. A bad value throws InvalidArgument.
  static uint64_t default_max_bytes();

  const std::filesystem::path& root() const { return root_; }
  uint64_t max_bytes() const { return max_bytes_; }
  // False once a write failed: store() then does nothing and returns false; load() still reads.
  bool writable() const { return writable_; }

  // nullopt when the entry is absent, or when it is corrupt: then *corrupt is set and the entry removed.
  // A hit marks the entry as recently used.
  std::optional<CacheEntry> load(const std::string& key, bool* corrupt = nullptr);
  // Publishes an entry. meta_json must be a JSON object (else InvalidArgument); the "integrity" field is
  // added. True when a complete entry for key exists afterwards (ours or another process's). Evicts
  // least recently used entries, never this one, when the cache grows over max_bytes().
  bool store(const std::string& key, std::string_view source, std::string_view cubin, std::string_view ptx,
             std::string meta_json);

  std::vector<CacheEntryInfo> list() const;  // newest first; temporary and trash directories are skipped
  size_t clear();                            // removes every entry; returns how many
  size_t prune(uint64_t max_bytes);          // LRU eviction until the total fits; returns how many removed

 private:
  std::vector<CacheEntryInfo> scan(bool with_names) const;
  size_t prune_except(uint64_t max_bytes, std::string_view keep);
  bool discard(const std::filesystem::path& entry) const;
  void disable(std::string_view reason);

  std::filesystem::path root_;
  uint64_t max_bytes_;
  std::atomic<bool> writable_{true};
};

// "123", "64K", "512M", "2G", "1T", also "512MiB", "2GB", "100B" (case-insensitive; powers of 1024).
// Throws InvalidArgument naming the bad text.
uint64_t parse_size(std::string_view text);

}  // namespace dmoe

#include "dmoe/disk_cache.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <system_error>
#include <utility>

#include "digest.hpp"
#include "dmoe/spec.hpp"
#include "json.hpp"

namespace dmoe {
namespace {

namespace fs = std::filesystem;

constexpr std::array<const char*, 3> kFiles = {"kernel.cu", "kernel.cubin", "kernel.ptx"};
constexpr const char* kMeta = "meta.json";
constexpr uint64_t kDefaultMaxBytes = uint64_t{4} << 30;
// Temporary and trash directories this old were left by a crashed process.
constexpr auto kStaleAge = std::chrono::hours(1);

std::atomic<bool> g_warned{false};

bool is_key(std::string_view key) {
  return key.size() == 32 && key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

void check_key(std::string_view key) {
  if (!is_key(key))
    throw InvalidArgument(fmt::format("invalid cache key '{}': expected 32 lowercase hex digits", key));
}

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closing can report a deferred write error (NFS), so writers check it.
  int close() { return ::close(std::exchange(fd_, -1)) == 0 ? 0 : errno; }

 private:
  int fd_;
};

Fd open_dir(const fs::path& dir) { return Fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); }

void write_file(int dir_fd, const fs::path& dir, const char* name, std::string_view bytes) {
  const auto fail = [&](int err) { throw_errno(err, fmt::format("cannot write {}", (dir / name).string())); };
  Fd fd(::openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) fail(errno);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd.get(), bytes.data(), bytes.size());
    if (n < 0 && errno != EINTR) fail(errno);
    if (n > 0) bytes.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd.get()) != 0) fail(errno);
  if (const int err = fd.close()) fail(err);
}

// Reads a whole regular file relative to dir_fd; false on any failure.
bool read_file(int dir_fd, const char* name, std::string& out) {
  Fd fd(::openat(dir_fd, name, O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  out.clear();
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0 && errno != EINTR) return false;
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
}

json::Value integrity_record(std::string_view bytes) {
  return json::Object{{"bytes", bytes.size()}, {"sha256", sha256_hex(bytes)}};
}

enum class EntryState { Absent, Corrupt, Ok };

// Reads and verifies <dir>. Files are opened relative to one directory descriptor so the entry read
// is the one that was opened even if another process renames it away meanwhile.
EntryState read_entry(const fs::path& dir, CacheEntry& entry) {
  Fd dir_fd = open_dir(dir);
  if (dir_fd.get() < 0) {
    // ENOENT is a miss (lstat could already see a concurrent publisher's entry). Otherwise the key is
    // corrupt only if something is there: ENOTDIR also comes from a root below a regular file.
    struct stat st;
    return errno != ENOENT && ::lstat(dir.c_str(), &st) == 0 ? EntryState::Corrupt : EntryState::Absent;
  }
  std::string* contents[] = {&entry.source, &entry.cubin, &entry.ptx};
  if (!read_file(dir_fd.get(), kMeta, entry.meta_json)) return EntryState::Corrupt;
  try {
    const json::Value meta = json::parse(entry.meta_json);
    const json::Value& integrity = meta["integrity"];
    for (size_t i = 0; i < kFiles.size(); ++i) {
      if (!read_file(dir_fd.get(), kFiles[i], *contents[i])) return EntryState::Corrupt;
      const json::Value& record = integrity[kFiles[i]];
      if (record["bytes"].get_int() != static_cast<int64_t>(contents[i]->size()) ||
          record["sha256"].get_string() != sha256_hex(*contents[i]))
        return EntryState::Corrupt;
    }
  } catch (const std::exception&) {  // unparsable meta.json, missing or mistyped fields
    return EntryState::Corrupt;
  }
  ::utimensat(dir_fd.get(), kMeta, nullptr, 0);  // LRU mark; fails harmlessly on read-only caches
  return EntryState::Ok;
}

bool is_stale(const fs::path& path) {
  std::error_code ec;
  const auto mtime = fs::last_write_time(path, ec);
  return !ec && fs::file_time_type::clock::now() - mtime > kStaleAge;
}

std::string add_integrity(const std::string& meta_json, std::string_view source, std::string_view cubin,
                          std::string_view ptx) {
  json::Value meta;
  try {
    meta = json::parse(meta_json);
  } catch (const json::ParseError& e) {
    throw InvalidArgument(fmt::format("cache meta_json is not valid JSON: {}", e.what()));
  }
  if (!meta.is_object())
    throw InvalidArgument(fmt::format("cache meta_json must be a JSON object, got '{}'", meta_json.substr(0, 80)));
  meta.set("integrity", json::Object{{kFiles[0], integrity_record(source)},
                                     {kFiles[1], integrity_record(cubin)},
                                     {kFiles[2], integrity_record(ptx)}});
  return meta.dump(2) + "\n";
}

fs::path home_dir() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  passwd pw;
  passwd* found = nullptr;
  std::array<char, 4096> buf;
  if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found && *found->pw_dir)
    return found->pw_dir;
  return {};
}

}  // namespace

DiskCache::DiskCache(fs::path root, uint64_t max_bytes)
    : root_(fs::absolute(root.empty() ? default_root() : root)),
      max_bytes_(max_bytes ? max_bytes : default_max_bytes()) {}

fs::path DiskCache::default_root() {
  if (const char* dir = std::getenv("DMOE_CACHE_DIR"); dir && *dir) return dir;
  // The XDG spec says to ignore relative values.
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') return fs::path(xdg) / "dmoe";
  if (fs::path home = home_dir(); !home.empty()) return home / ".cache" / "dmoe";
  // No home at all (an arbitrary container uid): a per-user directory keeps working rather than failing.
  return fs::temp_directory_path() / fmt::format("dmoe-cache-{}", ::getuid());
}

uint64_t DiskCache::default_max_bytes() {
  const char* text = std::getenv("DMOE_CACHE_MAX_SIZE");
  if (!text || !*text) return kDefaultMaxBytes;
  try {
    const uint64_t bytes = parse_size(text);
    return bytes ? bytes : std::numeric_limits<uint64_t>::max();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("DMOE_CACHE_MAX_SIZE: {}", e.what()));
  }
}

std::optional<CacheEntry> DiskCache::load(const std::string& key, bool* corrupt) {
  check_key(key);
  if (corrupt) *corrupt = false;
  CacheEntry entry{key, root_ / key};
  switch (read_entry(entry.dir, entry)) {
    case EntryState::Ok: return entry;
    case EntryState::Absent: return std::nullopt;
    case EntryState::Corrupt: break;
  }
  if (corrupt) *corrupt = true;
  discard(entry.dir);
  return std::nullopt;
}

bool DiskCache::store(const std::string& key, std::string_view source, std::string_view cubin, std::string_view ptx,
                      std::string meta_json) {
  check_key(key);
  const std::string meta = add_integrity(meta_json, source, cubin, ptx);
  if (!writable_) return false;
  const fs::path target = root_ / key;
  fs::path tmp;
  try {
    std::error_code ec;
    fs::create_directories(root_, ec);
    if (ec) throw_errno(ec.value(), fmt::format("cannot create {}", root_.string()));
    std::string templ = (root_ / fmt::format(".tmp-{}-XXXXXX", ::getpid())).string();
    if (!::mkdtemp(templ.data()))
      throw_errno(errno, fmt::format("cannot create a directory in {}", root_.string()));
    tmp = templ;
    {
      Fd dir_fd = open_dir(tmp);
      if (dir_fd.get() < 0) throw_errno(errno, fmt::format("cannot open {}", tmp.string()));
      // mkdtemp makes the directory private; entries are as readable as their files.
      ::fchmod(dir_fd.get(), 0755);
      const std::string_view contents[] = {source, cubin, ptx};
      for (size_t i = 0; i < kFiles.size(); ++i) write_file(dir_fd.get(), tmp, kFiles[i], contents[i]);
      write_file(dir_fd.get(), tmp, kMeta, meta);
      if (::fsync(dir_fd.get()) != 0) throw_errno(errno, fmt::format("cannot sync {}", tmp.string()));
    }
    // rename() of a directory onto a non-empty one fails, so at most one publisher wins. A loser
    // is fine if the winner's entry is complete; a corrupt leftover from a crash is replaced once.
    for (int attempt = 0;; ++attempt) {
      if (::rename(tmp.c_str(), target.c_str()) == 0) break;
      const int err = errno;
      if (err != EEXIST && err != ENOTEMPTY && err != ENOTDIR)
        throw_errno(err, fmt::format("cannot rename {} to {}", tmp.string(), target.string()));
      CacheEntry existing;
      const EntryState state = read_entry(target, existing);
      if (state == EntryState::Ok) {
        fs::remove_all(tmp, ec);
        return true;
      }
      if (attempt > 0) throw_errno(err, fmt::format("cannot replace corrupt entry {}", target.string()));
      if (state == EntryState::Corrupt) discard(target);
    }
    // Makes the rename durable; the entry is already visible, so a failure here changes nothing.
    if (Fd root_fd = open_dir(root_); root_fd.get() >= 0) ::fsync(root_fd.get());
  } catch (const std::system_error& e) {
    std::error_code ec;
    if (!tmp.empty()) fs::remove_all(tmp, ec);
    disable(e.what());
    return false;
  }
  if (max_bytes_ != std::numeric_limits<uint64_t>::max()) prune_except(max_bytes_, key);
  return true;
}

std::vector<CacheEntryInfo> DiskCache::list() const { return scan(true); }

size_t DiskCache::clear() {
  size_t removed = 0;
  for (const CacheEntryInfo& info : scan(false)) removed += discard(info.dir);
  return removed;
}

size_t DiskCache::prune(uint64_t max_bytes) { return prune_except(max_bytes, {}); }

std::vector<CacheEntryInfo> DiskCache::scan(bool with_names) const {
  std::vector<CacheEntryInfo> entries;
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    CacheEntryInfo info{it->path().filename().string(), "", 0, {}, it->path()};
    if (!is_key(info.key)) continue;  // temporary, trash and foreign files
    std::error_code file_ec;
    info.last_used = fs::last_write_time(info.dir / kMeta, file_ec);
    if (file_ec) info.last_used = fs::last_write_time(info.dir, file_ec);  // a corrupt entry still counts
    if (file_ec) continue;                                                 // removed meanwhile
    for (fs::directory_iterator file(info.dir, file_ec); !file_ec && file != end; file.increment(file_ec)) {
      std::error_code size_ec;
      const uint64_t size = file->file_size(size_ec);
      if (!size_ec) info.bytes += size;
    }
    std::string meta;
    if (with_names && read_file(AT_FDCWD, (info.dir / kMeta).c_str(), meta)) {
      try {
        const json::Value parsed = json::parse(meta);  // find() points into it: keep it alive
        if (const json::Value* name = parsed.find("name"); name && name->is_string()) info.name = name->get_string();
      } catch (const json::ParseError&) {  // a corrupt entry is listed without a name
      }
    }
    entries.push_back(std::move(info));
  }
  std::sort(entries.begin(), entries.end(), [](const CacheEntryInfo& a, const CacheEntryInfo& b) {
    return a.last_used != b.last_used ? a.last_used > b.last_used : a.key < b.key;
  });
  return entries;
}

size_t DiskCache::prune_except(uint64_t max_bytes, std::string_view keep) {
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code remove_ec;
    if ((name.starts_with(".tmp-") || name.starts_with(".trash-")) && is_stale(it->path()))
      fs::remove_all(it->path(), remove_ec);
  }
  const std::vector<CacheEntryInfo> entries = scan(false);
  uint64_t total = 0;
  for (const CacheEntryInfo& info : entries) total += info.bytes;
  size_t removed = 0;
  for (auto it = entries.rbegin(); it != entries.rend() && total > max_bytes; ++it) {  // oldest first
    if (it->key != keep && discard(it->dir)) {
      total -= it->bytes;
      ++removed;
    }
  }
  return removed;
}

// Moves the entry into a fresh trash directory before deleting it, so that no reader ever sees a
// half-deleted entry under its key. Returns false when it was already gone or cannot be moved.
bool DiskCache::discard(const fs::path& entry) const {
  std::string trash = (root_ / ".trash-XXXXXX").string();
  if (!::mkdtemp(trash.data())) return false;
  const bool moved = ::rename(entry.c_str(), (fs::path(trash) / "entry").c_str()) == 0;
  std::error_code ec;
  fs::remove_all(trash, ec);
  return moved;
}

void DiskCache::disable(std::string_view reason) {
  writable_ = false;
  if (!g_warned.exchange(true))
    std::fprintf(stderr, "dmoe: warning: kernel cache at %s is not writable (%.*s); caching in memory only\n",
                 root_.c_str(), static_cast<int>(reason.size()), reason.data());
}

uint64_t parse_size(std::string_view text) {
  const auto invalid = [&] {
    return InvalidArgument(fmt::format(
        "invalid size '{}': expected a byte count with an optional K, M, G or T suffix (powers of 1024), "
        "e.g. 512M or 2GiB",
        text));
  };
  uint64_t count = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), count);
  if (ec == std::errc::result_out_of_range)
    throw InvalidArgument(fmt::format("size '{}' exceeds 2^64-1 bytes", text));
  if (ec != std::errc()) throw invalid();
  std::string unit(end, text.data() + text.size());
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  int shift = 0;
  if (!unit.empty() && unit != "b") {
    const size_t power = std::string_view("kmgt").find(unit[0]);
    if (power == std::string_view::npos || (unit.size() > 1 && unit.substr(1) != "b" && unit.substr(1) != "ib"))
      throw invalid();
    shift = 10 * static_cast<int>(power + 1);
  }
  if (count > std::numeric_limits<uint64_t>::max() >> shift)
    throw InvalidArgument(fmt::format("size '{}' exceeds 2^64-1 bytes", text));
  return count << shift;
}

}  // namespace dmoe

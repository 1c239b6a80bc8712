#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "digest.hpp"
#include "dmoe/disk_cache.hpp"
#include "dmoe/spec.hpp"
#include "json.hpp"

namespace fs = std::filesystem;
using dmoe::DiskCache;

namespace {

// A unique directory under $DMOE_TEST_TMP (or the system temp dir), removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    const char* base = std::getenv("DMOE_TEST_TMP");
    const fs::path dir = base && *base ? fs::path(base) : fs::temp_directory_path();
    fs::create_directories(dir);
    std::string templ = (dir / "disk_cache_test-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Sets or unsets an environment variable for one scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> saved;
  EnvGuard(std::string n, const char* value) : name(std::move(n)) {
    if (const char* old = std::getenv(name.c_str())) saved = old;
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    if (saved)
      ::setenv(name.c_str(), saved->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Redirects this process's stderr to a file for one scope.
struct StderrCapture {
  fs::path file;
  int saved;
  explicit StderrCapture(fs::path f) : file(std::move(f)) {
    std::fflush(stderr);
    saved = ::dup(2);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::string finish() {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    saved = -1;
    return read_file(file);
  }
  ~StderrCapture() {
    if (saved >= 0) finish();
  }
};

std::string key_of(int i) { return dmoe::KeyBuilder().add("test", std::to_string(i)).key(); }

struct Sample {
  std::string source, cubin, ptx, meta;
};

Sample sample(int i) {
  Sample s;
  s.source = "extern \"C\" __global__ void k" + std::to_string(i) + "() {}\n";
  for (int b = 0; b < 3000; ++b) s.cubin += static_cast<char>((b * 31 + i) & 0xff);  // binary, with NULs
  s.ptx = ".version 8.0\n// kernel " + std::to_string(i) + "\n";
  s.meta = R"({"name": "dmoe_long_kernel_name_)" + std::to_string(i) + R"(", "registers": 96})";
  return s;
}

bool store(DiskCache& cache, const std::string& key, const Sample& s) {
  return cache.store(key, s.source, s.cubin, s.ptx, s.meta);
}

size_t count_prefixed(const fs::path& root, std::string_view prefix) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().starts_with(prefix)) ++n;
  return n;
}

void check_loads(DiskCache& cache, const std::string& key, const Sample& s) {
  bool corrupt = true;
  const auto entry = cache.load(key, &corrupt);
  REQUIRE(entry.has_value());
  CHECK_FALSE(corrupt);
  CHECK(entry->source == s.source);
  CHECK(entry->cubin == s.cubin);
  CHECK(entry->ptx == s.ptx);
}

void set_last_used(const fs::path& entry, std::chrono::hours age) {
  fs::last_write_time(entry / "meta.json", fs::file_time_type::clock::now() - age);
}

}  // namespace

TEST_CASE("disk cache: store then load returns identical bytes") {
  TempDir tmp;
  DiskCache cache(tmp.path / "cache");
  const std::string key = key_of(1);
  const Sample s = sample(1);
  REQUIRE(store(cache, key, s));
  CHECK(cache.writable());

  const fs::path dir = tmp.path / "cache" / key;
  for (const char* f : {"kernel.cu", "kernel.cubin", "kernel.ptx", "meta.json"})
    CHECK(fs::is_regular_file(dir / f));
  CHECK(read_file(dir / "kernel.cubin") == s.cubin);

  const auto entry = cache.load(key);
  REQUIRE(entry.has_value());
  CHECK(entry->key == key);
  CHECK(entry->dir == dir);
  CHECK(entry->source == s.source);
  CHECK(entry->cubin == s.cubin);
  CHECK(entry->ptx == s.ptx);
  CHECK(entry->meta_json == read_file(dir / "meta.json"));

  // The caller's fields are kept, in order, and integrity records every file.
  const auto meta = dmoe::json::parse(entry->meta_json);
  CHECK(meta.get_object()[0].first == "name");
  CHECK(meta["name"].get_string() == "dmoe_long_kernel_name_1");
  CHECK(meta["registers"].get_int() == 96);
  CHECK(meta["integrity"]["kernel.cubin"]["bytes"].get_int() == 3000);
  CHECK(meta["integrity"]["kernel.cubin"]["sha256"].get_string() == dmoe::sha256_hex(s.cubin));
  CHECK(meta["integrity"]["kernel.cu"]["sha256"].get_string() == dmoe::sha256_hex(s.source));
  CHECK(meta["integrity"]["kernel.ptx"]["bytes"].get_int() == static_cast<int64_t>(s.ptx.size()));

  // Empty files are valid entries too.
  REQUIRE(cache.store(key_of(2), "", "", "", "{}"));
  const auto empty = cache.load(key_of(2));
  REQUIRE(empty.has_value());
  CHECK(empty->cubin.empty());
  CHECK(count_prefixed(tmp.path / "cache", ".") == 0);
}

TEST_CASE("disk cache: a missing key is a clean miss") {
  TempDir tmp;
  DiskCache absent_root(tmp.path / "never-created");
  bool corrupt = true;
  CHECK_FALSE(absent_root.load(key_of(1), &corrupt).has_value());
  CHECK_FALSE(corrupt);
  CHECK_FALSE(fs::exists(tmp.path / "never-created"));  // loading creates nothing

  DiskCache cache(tmp.path);
  REQUIRE(store(cache, key_of(1), sample(1)));
  corrupt = true;
  CHECK_FALSE(cache.load(key_of(2), &corrupt).has_value());
  CHECK_FALSE(corrupt);
  CHECK_FALSE(cache.load(key_of(3)).has_value());
}

TEST_CASE("disk cache: a damaged entry is a corrupt miss, removed, then rebuilt") {
  TempDir tmp;
  DiskCache cache(tmp.path);
  const std::string key = key_of(7);
  const Sample s = sample(7);
  REQUIRE(store(cache, key, s));
  const fs::path dir = tmp.path / key;

  const auto write = [](const fs::path& p, std::string_view text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
  };
  SUBCASE("truncated cubin") { fs::resize_file(dir / "kernel.cubin", 1000); }
  SUBCASE("empty cubin") { fs::resize_file(dir / "kernel.cubin", 0); }
  SUBCASE("flipped byte, same size") {
    std::string cubin = s.cubin;
    cubin[1234] ^= 0x01;
    write(dir / "kernel.cubin", cubin);
  }
  SUBCASE("appended byte in the source") { write(dir / "kernel.cu", s.source + " "); }
  SUBCASE("changed ptx") { write(dir / "kernel.ptx", ".version 9.9\n"); }
  SUBCASE("garbage meta.json") {
    write(dir / "meta.json",
          "\x7f"
          "ELF garbage {");
  }
  SUBCASE("truncated meta.json") {
    const std::string meta = read_file(dir / "meta.json");
    write(dir / "meta.json", meta.substr(0, meta.size() / 2));
  }
  SUBCASE("meta.json without integrity") { write(dir / "meta.json", s.meta); }
  SUBCASE("meta.json with a mistyped integrity record") {
    write(dir / "meta.json", R"({"integrity": {"kernel.cu": 1, "kernel.cubin": [], "kernel.ptx": "x"}})");
  }
  SUBCASE("meta.json missing") { fs::remove(dir / "meta.json"); }
  SUBCASE("kernel.ptx missing") { fs::remove(dir / "kernel.ptx"); }
  SUBCASE("kernel.cubin is a directory") {
    fs::remove(dir / "kernel.cubin");
    fs::create_directory(dir / "kernel.cubin");
  }
  SUBCASE("empty entry directory") {
    fs::remove_all(dir);
    fs::create_directory(dir);
  }
  SUBCASE("entry is a regular file") {
    fs::remove_all(dir);
    write(dir, "not a directory");
  }

  bool corrupt = false;
  CHECK_FALSE(cache.load(key, &corrupt).has_value());
  CHECK(corrupt);
  CHECK_FALSE(fs::exists(fs::symlink_status(dir)));
  CHECK(count_prefixed(tmp.path, ".trash-") == 0);

  // Gone means a plain miss now, and the next store rebuilds it.
  corrupt = true;
  CHECK_FALSE(cache.load(key, &corrupt).has_value());
  CHECK_FALSE(corrupt);
  REQUIRE(store(cache, key, s));
  check_loads(cache, key, s);
}

TEST_CASE("disk cache: store replaces a corrupt leftover it finds in the way") {
  TempDir tmp;
  DiskCache cache(tmp.path);
  const std::string key = key_of(3);
  REQUIRE(store(cache, key, sample(3)));
  fs::resize_file(tmp.path / key / "kernel.cubin", 10);  // a crash mid-write in an older version

  Sample fresh = sample(3);
  fresh.ptx = "// rebuilt\n";
  REQUIRE(store(cache, key, fresh));
  check_loads(cache, key, fresh);
  CHECK(count_prefixed(tmp.path, ".") == 0);
}

TEST_CASE("disk cache: the first complete entry for a key wins") {
  TempDir tmp;
  DiskCache cache(tmp.path);
  const std::string key = key_of(4);
  const Sample first = sample(4);
  REQUIRE(store(cache, key, first));
  CHECK(store(cache, key, sample(5)));  // lost race: still true, entry untouched
  check_loads(cache, key, first);
  CHECK(count_prefixed(tmp.path, ".") == 0);
}

TEST_CASE("disk cache: keys other than 32 lowercase hex digits are rejected") {
  TempDir tmp;
  DiskCache cache(tmp.path / "cache");
  const Sample s = sample(1);
  const std::string good = key_of(1);
  std::string upper = good;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  REQUIRE(upper != good);
  for (const std::string& bad :
       {std::string("../x"), std::string(""), upper, good.substr(0, 31), good + "0", std::string(32, 'g'),
        "../" + good.substr(3), "/" + good.substr(1), good.substr(0, 31) + std::string(1, '\0'),
        good.substr(0, 30) + "/.", std::string(32, '.')}) {
    CHECK_THROWS_AS(cache.load(bad), dmoe::InvalidArgument);
    CHECK_THROWS_AS(store(cache, bad, s), dmoe::InvalidArgument);
  }
  CHECK_THROWS_WITH_AS(cache.load("../x"), "invalid cache key '../x': expected 32 lowercase hex digits",
                       dmoe::InvalidArgument);
  CHECK_FALSE(fs::exists(tmp.path / "cache"));
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 0);
}

TEST_CASE("disk cache: meta_json must be a JSON object") {
  TempDir tmp;
  DiskCache cache(tmp.path / "cache");
  for (const char* meta : {"", "[]", "42", "\"name\"", "{\"a\":", "not json"})
    CHECK_THROWS_AS(cache.store(key_of(1), "src", "bin", "ptx", meta), dmoe::InvalidArgument);
  CHECK_FALSE(fs::exists(tmp.path / "cache"));
  CHECK(cache.writable());
}

TEST_CASE("disk cache: an unwritable root degrades to memory-only with one warning") {
  TempDir tmp;
  std::ofstream(tmp.path / "file") << "a regular file";
  const fs::path root = tmp.path / "file" / "cache";  // fails for root too, unlike chmod
  StderrCapture capture(tmp.path / "stderr.txt");
  DiskCache cache(root);
  const Sample s = sample(1);
  CHECK(cache.writable());
  CHECK_FALSE(store(cache, key_of(1), s));
  CHECK_FALSE(cache.writable());
  CHECK_FALSE(store(cache, key_of(2), s));
  DiskCache other(root);
  CHECK_FALSE(store(other, key_of(1), s));
  CHECK_FALSE(other.writable());
  bool corrupt = true;
  CHECK_FALSE(cache.load(key_of(1), &corrupt).has_value());  // reads are still tried, quietly
  CHECK_FALSE(corrupt);
  CHECK(cache.list().empty());
  CHECK(cache.clear() == 0);
  CHECK(cache.prune(0) == 0);
  const std::string err = capture.finish();

  size_t lines = 0;
  for (char c : err) lines += c == '\n';
  CHECK(lines == 1);
  CHECK(err.starts_with("dmoe: warning: kernel cache at " + root.string() + " is not writable ("));
  CHECK(err.find("Not a directory") != std::string::npos);
  CHECK(err.ends_with("; caching in memory only\n"));
}

TEST_CASE("disk cache: concurrent publishers in threads and processes") {
  TempDir tmp;
  const fs::path root = tmp.path / "cache";
  constexpr int kKeys = 24, kProcesses = 4, kThreads = 4;
  const auto publish_all = [&] {
    DiskCache cache(root);
    bool ok = true;
    for (int k = 0; k < kKeys; ++k) ok = store(cache, key_of(k), sample(k)) && ok;
    return ok;
  };

  // Children are forked before any thread exists and wait on a pipe so that all writers start together.
  int gate[2];
  REQUIRE(::pipe(gate) == 0);
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(gate[1]);
      char c;
      while (::read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(publish_all() ? 0 : 1);
    }
    children.push_back(pid);
  }
  ::close(gate[0]);

  std::atomic<bool> go{false}, writers_done{false};
  std::atomic<int> failed_stores{0}, corrupt_reads{0}, bad_reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      while (!go) std::this_thread::yield();
      if (!publish_all()) ++failed_stores;
    });
  // Readers must never observe a partial entry while writers publish.
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&] {
      DiskCache cache(root);
      while (!go) std::this_thread::yield();
      do {
        for (int k = 0; k < kKeys; ++k) {
          bool corrupt = false;
          const auto entry = cache.load(key_of(k), &corrupt);
          corrupt_reads += corrupt;
          bad_reads += entry && entry->cubin != sample(k).cubin;
        }
      } while (!writers_done);
    });
  go = true;
  ::close(gate[1]);
  for (int t = 0; t < kThreads; ++t) threads[t].join();
  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  writers_done = true;
  for (size_t t = kThreads; t < threads.size(); ++t) threads[t].join();

  CHECK(failed_stores == 0);
  CHECK(corrupt_reads == 0);
  CHECK(bad_reads == 0);
  DiskCache cache(root);
  for (int k = 0; k < kKeys; ++k) check_loads(cache, key_of(k), sample(k));
  CHECK(cache.list().size() == kKeys);
  CHECK(count_prefixed(root, ".tmp-") == 0);
  CHECK(count_prefixed(root, ".trash-") == 0);
}

TEST_CASE("disk cache: prune evicts the least recently loaded entries first") {
  TempDir tmp;
  DiskCache cache(tmp.path);
  for (int k = 0; k < 3; ++k) REQUIRE(store(cache, key_of(k), sample(k)));
  set_last_used(tmp.path / key_of(0), std::chrono::hours(3));
  set_last_used(tmp.path / key_of(1), std::chrono::hours(2));
  set_last_used(tmp.path / key_of(2), std::chrono::hours(1));
  REQUIRE(cache.load(key_of(0)).has_value());  // now the most recently used

  auto entries = cache.list();
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].key == key_of(0));
  CHECK(entries[1].key == key_of(2));
  CHECK(entries[2].key == key_of(1));
  uint64_t total = 0;
  for (const auto& e : entries) total += e.bytes;

  CHECK(cache.prune(total) == 0);
  CHECK(cache.prune(total - 1) == 1);
  CHECK_FALSE(fs::exists(tmp.path / key_of(1)));
  CHECK(fs::exists(tmp.path / key_of(0)));
  CHECK(fs::exists(tmp.path / key_of(2)));
  CHECK(cache.prune(entries[0].bytes) == 1);
  CHECK_FALSE(fs::exists(tmp.path / key_of(2)));
  CHECK(cache.prune(0) == 1);
  CHECK(cache.list().empty());
}

TEST_CASE("disk cache: store keeps the cache under max_bytes, never evicting the new entry") {
  TempDir tmp;
  uint64_t entry_bytes = 0;
  {
    DiskCache probe(tmp.path / "probe");
    REQUIRE(store(probe, key_of(0), sample(0)));
    entry_bytes = probe.list().at(0).bytes;
  }
  DiskCache cache(tmp.path / "cache", entry_bytes * 5 / 2);  // room for two entries
  CHECK(cache.max_bytes() == entry_bytes * 5 / 2);
  REQUIRE(store(cache, key_of(0), sample(0)));
  REQUIRE(store(cache, key_of(1), sample(1)));
  set_last_used(tmp.path / "cache" / key_of(0), std::chrono::hours(2));
  set_last_used(tmp.path / "cache" / key_of(1), std::chrono::hours(1));
  REQUIRE(store(cache, key_of(2), sample(2)));
  CHECK_FALSE(cache.load(key_of(0)).has_value());
  CHECK(cache.load(key_of(1)).has_value());
  CHECK(cache.load(key_of(2)).has_value());

  DiskCache tiny(tmp.path / "cache", 1);
  REQUIRE(store(tiny, key_of(3), sample(3)));
  const auto left = tiny.list();
  REQUIRE(left.size() == 1);
  CHECK(left[0].key == key_of(3));
}

TEST_CASE("disk cache: list, clear and stale temporaries") {
  TempDir tmp;
  DiskCache cache(tmp.path);
  for (int k = 0; k < 3; ++k) REQUIRE(store(cache, key_of(k), sample(k)));
  REQUIRE(cache.store(key_of(9), "s", "c", "p", R"({"arch": "sm_90a"})"));
  // Things that are not entries: in-flight and crashed publishers, trash, foreign files.
  fs::create_directory(tmp.path / ".tmp-1-fresh");
  fs::create_directory(tmp.path / ".tmp-2-stale");
  fs::create_directory(tmp.path / ".trash-stale");
  std::ofstream(tmp.path / ".trash-stale" / "f") << "x";
  std::ofstream(tmp.path / "README") << "not an entry";
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  fs::last_write_time(tmp.path / ".tmp-2-stale", old);
  fs::last_write_time(tmp.path / ".trash-stale", old);

  const auto entries = cache.list();
  REQUIRE(entries.size() == 4);
  for (size_t i = 1; i < entries.size(); ++i) CHECK(entries[i - 1].last_used >= entries[i].last_used);
  for (const auto& e : entries) {
    CHECK(e.dir == tmp.path / e.key);
    uint64_t bytes = 0;
    for (const auto& f : fs::directory_iterator(e.dir)) bytes += f.file_size();
    CHECK(e.bytes == bytes);
    CHECK(e.name == (e.key == key_of(9) ? ""
                                        : "dmoe_long_kernel_name_" + std::to_string(e.key == key_of(0)   ? 0
                                                                     : e.key == key_of(1) ? 1
                                                                                          : 2)));
  }

  CHECK(cache.prune(UINT64_MAX) == 0);
  CHECK(fs::exists(tmp.path / ".tmp-1-fresh"));
  CHECK_FALSE(fs::exists(tmp.path / ".tmp-2-stale"));
  CHECK_FALSE(fs::exists(tmp.path / ".trash-stale"));

  CHECK(cache.clear() == 4);
  CHECK(cache.list().empty());
  CHECK(cache.clear() == 0);
  CHECK(fs::exists(tmp.path / "README"));
  CHECK(count_prefixed(tmp.path, ".trash-") == 0);
}

TEST_CASE("disk cache: parse_size") {
  using dmoe::parse_size;
  CHECK(parse_size("0") == 0);
  CHECK(parse_size("123") == 123);
  CHECK(parse_size("100B") == 100);
  CHECK(parse_size("64K") == 64 * 1024);
  CHECK(parse_size("64k") == 64 * 1024);
  CHECK(parse_size("1KB") == 1024);
  CHECK(parse_size("1KiB") == 1024);
  CHECK(parse_size("512M") == 512ull << 20);
  CHECK(parse_size("512MiB") == 512ull << 20);
  CHECK(parse_size("2G") == 2ull << 30);
  CHECK(parse_size("2GB") == 2ull << 30);
  CHECK(parse_size("2gib") == 2ull << 30);
  CHECK(parse_size("1T") == 1ull << 40);
  CHECK(parse_size("16777215T") == 16777215ull << 40);
  CHECK(parse_size("18446744073709551615") == UINT64_MAX);
  for (const char* bad : {"", "abc", "G", "12X", "-1", "+1", "1.5G", " 1G", "1G ", "1 G", "1GiBx", "1iB", "1Gi",
                          "1PB", "0x10", "18446744073709551616", "16777216T", "99999999999999999999K"})
    CHECK_THROWS_AS_MESSAGE(parse_size(bad), dmoe::InvalidArgument, "input: '" << bad << "'");
  CHECK_THROWS_WITH_AS(parse_size("12X"),
                       "invalid size '12X': expected a byte count with an optional K, M, G or T suffix (powers of "
                       "1024), e.g. 512M or 2GiB",
                       dmoe::InvalidArgument);
  CHECK_THROWS_WITH_AS(parse_size("16777216T"), "size '16777216T' exceeds 2^64-1 bytes", dmoe::InvalidArgument);
}

TEST_CASE("disk cache: default root and size come from the environment") {
  EnvGuard dir("DMOE_CACHE_DIR", nullptr), xdg("XDG_CACHE_HOME", nullptr), home("HOME", "/home/someone"),
      size("DMOE_CACHE_MAX_SIZE", nullptr);
  CHECK(DiskCache::default_root() == fs::path("/home/someone/.cache/dmoe"));
  {
    EnvGuard g("XDG_CACHE_HOME", "relative/ignored");
    CHECK(DiskCache::default_root() == fs::path("/home/someone/.cache/dmoe"));
  }
  EnvGuard xdg_set("XDG_CACHE_HOME", "/xdg/cache");
  CHECK(DiskCache::default_root() == fs::path("/xdg/cache/dmoe"));
  EnvGuard dir_set("DMOE_CACHE_DIR", "/explicit/dmoe-cache");
  CHECK(DiskCache::default_root() == fs::path("/explicit/dmoe-cache"));
  CHECK(DiskCache().root() == fs::path("/explicit/dmoe-cache"));
  {
    EnvGuard g("DMOE_CACHE_DIR", "");  // empty means unset
    CHECK(DiskCache::default_root() == fs::path("/xdg/cache/dmoe"));
  }
  CHECK(DiskCache("relative/cache").root() == fs::current_path() / "relative/cache");

  CHECK(DiskCache::default_max_bytes() == 4ull << 30);
  CHECK(DiskCache("/x").max_bytes() == 4ull << 30);
  CHECK(DiskCache("/x", 1234).max_bytes() == 1234);
  {
    EnvGuard g("DMOE_CACHE_MAX_SIZE", "512M");
    CHECK(DiskCache::default_max_bytes() == 512ull << 20);
    CHECK(DiskCache("/x").max_bytes() == 512ull << 20);
  }
  {
    EnvGuard g("DMOE_CACHE_MAX_SIZE", "0");
    CHECK(DiskCache::default_max_bytes() == UINT64_MAX);  // unlimited
  }
  {
    EnvGuard g("DMOE_CACHE_MAX_SIZE", "lots");
    CHECK_THROWS_WITH_AS(DiskCache::default_max_bytes(),
                         doctest::Contains("DMOE_CACHE_MAX_SIZE: invalid size 'lots'"), dmoe::InvalidArgument);
  }
}

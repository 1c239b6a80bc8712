// The compiler's two cache levels: memory and disk, under concurrency, corruption and bad locations.
#include <doctest/doctest.h>

#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <thread>

#include "dmoe/compiler.hpp"
#include "test_dirs.hpp"

extern char** environ;

using namespace dmoe;
namespace fs = std::filesystem;

namespace {

KernelSpec spec(Op op = Op::SDD, bool ta = false, bool tb = true) {
  MoeShape s;
  s.hidden = 256;
  s.ffn = 512;
  s.experts = 4;
  s.block = 128;
  return default_spec(s, op, ta, tb, Arch::SM90a);
}

size_t count_entries(const fs::path& root, std::string_view prefix = "") {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().starts_with(prefix) &&
        (prefix.empty() ? e.path().filename().string()[0] != '.' : true))
      ++n;
  return n;
}

}  // namespace

TEST_CASE("memory cache: a miss compiles, a hit returns the same kernel") {
  test::TempDir dir;
  Compiler c({dir.path});
  auto k1 = c.get(spec());
  CHECK_FALSE(k1->disk_hit);
  CHECK(k1->dir == dir.path / k1->key);
  CHECK(fs::exists(k1->dir / "kernel.cubin"));
  CHECK(fs::exists(k1->dir / "kernel.cu"));
  CHECK(fs::exists(k1->dir / "kernel.ptx"));
  CHECK(fs::exists(k1->dir / "meta.json"));
  auto k2 = c.get(spec());
  CHECK(k1.get() == k2.get());
  CHECK(k1->key == cache_key(spec()));
}

TEST_CASE("disk cache: a second process-like compiler loads the entry") {
  test::TempDir dir;
  std::string cubin, key;
  {
    Compiler c({dir.path});
    auto k = c.get(spec());
    cubin = k->cubin;
    key = k->key;
  }
  Compiler c2({dir.path});
  auto k = c2.get(spec());
  CHECK(k->disk_hit);
  CHECK(k->key == key);
  CHECK(k->cubin == cubin);
  CHECK(k->meta.registers > 0);
  CHECK(k->name == kernel_name(spec()));
  CHECK(count_entries(dir.path) == 1);
}

TEST_CASE("disk cache: a truncated cubin is detected and rebuilt") {
  test::TempDir dir;
  fs::path entry;
  {
    Compiler c({dir.path});
    entry = c.get(spec())->dir;
  }
  const auto size = fs::file_size(entry / "kernel.cubin");
  fs::resize_file(entry / "kernel.cubin", size / 2);
  {
    Compiler c({dir.path});
    auto k = c.get(spec());
    CHECK_FALSE(k->disk_hit);  // rebuilt
    CHECK(k->cubin.size() == size);
  }
  Compiler c({dir.path});
  auto k = c.get(spec());
  CHECK(k->disk_hit);  // and the rebuilt entry is whole again
  CHECK(fs::file_size(entry / "kernel.cubin") == size);
}

TEST_CASE("disk cache: metadata of another kernel under the key is not trusted") {
  test::TempDir dir;
  fs::path entry;
  {
    Compiler c({dir.path});
    entry = c.get(spec())->dir;
  }
  // Garbage meta.json: integrity fails, the entry is rebuilt.
  std::ofstream(entry / "meta.json") << "{\"name\": 12";
  Compiler c({dir.path});
  CHECK_FALSE(c.get(spec())->disk_hit);
}

TEST_CASE("disk cache: an entry whose ptxas log says the wgmma were serialized is refused, not run") {
  // An entry stored by a dmoe that did not know this reason code has the flag false and the sentence in
  // its log: the cache must not hand that kernel out.
  test::TempDir dir;
  fs::path entry;
  {
    Compiler c({dir.path});
    entry = c.get(spec())->dir;
  }
  std::string meta;
  {
    std::ifstream in(entry / "meta.json");
    meta.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string field = "\"ptxas_log\": \"";
  const size_t at = meta.find(field);
  REQUIRE(at != std::string::npos);
  REQUIRE(meta.find("\"wgmma_serialized\": false") != std::string::npos);
  meta.insert(at + field.size(),
              "ptxas info    : (C7599) Potential Performance Loss: wgmma.mma_async instructions are serialized "
              "due to a reason not seen before\\n");
  std::ofstream(entry / "meta.json", std::ios::trunc) << meta;
  Compiler c({dir.path});
  try {
    c.get(spec());
    FAIL("a serialized kernel came out of the cache");
  } catch (const CompileError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("C7599") != std::string::npos);
    CHECK(msg.find(kernel_name(spec())) != std::string::npos);
    CHECK(msg.find(entry.filename().string()) != std::string::npos);
  }
}

TEST_CASE("an unwritable cache location degrades to memory only") {
  test::TempDir dir;
  std::ofstream(dir.path / "file") << "not a directory";
  Compiler c({dir.path / "file" / "cache"});
  auto k = c.get(spec());
  CHECK(k->cubin.size() > 0);
  CHECK(k->dir.empty());
  REQUIRE(c.disk() != nullptr);
  CHECK_FALSE(c.disk()->writable());
  CHECK(c.get(spec()).get() == k.get());
}

TEST_CASE("DMOE_CACHE_DISABLE turns the disk cache off") {
  test::TempDir dir;
  setenv("DMOE_CACHE_DISABLE", "1", 1);
  Compiler c({dir.path});
  unsetenv("DMOE_CACHE_DISABLE");
  CHECK(c.disk() == nullptr);
  CHECK(c.get(spec())->dir.empty());
  CHECK(count_entries(dir.path) == 0);
}

TEST_CASE("threads asking for one spec at once share one compile") {
  test::TempDir dir;
  Compiler c({dir.path});
  std::vector<std::shared_ptr<const CompiledKernel>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[i] = c.get(spec(Op::DSD, true, false)); });
  for (auto& t : threads) t.join();
  for (auto& k : got) CHECK(k.get() == got[0].get());
}

TEST_CASE("get_all compiles a layer's kernels in parallel, in order") {
  test::TempDir dir;
  Compiler c({dir.path});
  const auto specs = layer_kernels(preset("tiny"), Arch::SM90a);
  const auto ks = c.get_all(specs, 3);
  REQUIRE(ks.size() == specs.size());
  for (size_t i = 0; i < specs.size(); ++i) CHECK(ks[i]->name == kernel_name(specs[i]));
  CHECK(count_entries(dir.path) == specs.size());
}

TEST_CASE("get_all reports a failure after the other jobs finish") {
  test::TempDir dir;
  Compiler c({dir.path});
  std::vector<KernelSpec> specs = {spec(), spec(Op::DSD, false, false)};
  specs[1].ffn = 100;  // invalid
  CHECK_THROWS_AS(c.get_all(specs, 2), InvalidArgument);
  CHECK(count_entries(dir.path) == 1);
}

TEST_CASE("four processes compiling the same key into an empty directory") {
  const char* exe = std::getenv("DMOE_EXE");
  REQUIRE_MESSAGE(exe != nullptr, "DMOE_EXE must name the dmoe executable (Meson sets it)");
  test::TempDir dir;
  const fs::path cache = dir.path / "cache";  // does not exist yet: the racers create it
  const std::string env_dir = "DMOE_CACHE_DIR=" + cache.string();
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    if (!std::string_view(*e).starts_with("DMOE_CACHE_DIR=")) envp.push_back(*e);
  envp.push_back(const_cast<char*>(env_dir.c_str()));
  envp.push_back(nullptr);
  const char* argv[] = {exe, "compile", "--op", "dsd", "--trans", "nn", "--hidden", "256", "--ffn", "512",
                        "--experts", "4", "--block", "128", "--json", nullptr};
  std::vector<pid_t> pids;
  for (int i = 0; i < 4; ++i) {
    pid_t pid;
    REQUIRE(posix_spawn(&pid, exe, nullptr, nullptr, const_cast<char**>(argv), envp.data()) == 0);
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(count_entries(cache) == 1);
  size_t leftovers = 0;
  for (const auto& e : fs::directory_iterator(cache)) leftovers += e.path().filename().string()[0] == '.';
  CHECK(leftovers == 0);
  Compiler c({cache});
  auto k = c.get(spec(Op::DSD, false, false));
  CHECK(k->disk_hit);
}

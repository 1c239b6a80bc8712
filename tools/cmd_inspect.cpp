// `dmoe inspect`: a kernel's source, PTX, SASS and metadata, by spec flags or by cache key.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <system_error>

#include "cli.hpp"
#include "dmoe/compiler.hpp"
#include "json.hpp"

extern char** environ;

namespace dmoe::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kNoDisassembler =
    "SASS: cuobjdump/nvdisasm not found (install the CUDA toolkit's cuobjdump or set CUDA_HOME)";

struct InspectFlags {
  SpecFlags spec;
  std::string key;
  bool source = false, ptx = false, sass = false, meta = false;
  CLI::Option* key_opt = nullptr;
};

// What inspect shows, whichever way the kernel was found.
struct Artifacts {
  std::string name, key, source, cubin, ptx, meta_json;
};

Artifacts from_key(const std::string& key) {
  DiskCache cache;
  bool corrupt = false;
  std::optional<CacheEntry> entry = cache.load(key, &corrupt);
  if (!entry)
    throw std::runtime_error(
        corrupt ? fmt::format("cache entry '{}' in {} was corrupt and has been removed", key, cache.root().string())
                : fmt::format("no cache entry with key '{}' in {}", key, cache.root().string()));
  const json::Value meta = json::parse(entry->meta_json);
  const json::Value* name = meta.find("name");
  return {name && name->is_string() ? name->get_string() : "",
          key,
          std::move(entry->source),
          std::move(entry->cubin),
          std::move(entry->ptx),
          std::move(entry->meta_json)};
}

// A memory-only kernel has no meta.json: describe it from what ptxas reported.
std::string meta_of(const CompiledKernel& k) {
  const KernelMeta& m = k.meta;
  return json::Value(json::Object{{"name", k.name},
                                  {"key", k.key},
                                  {"registers", m.registers},
                                  {"spill_store_bytes", m.spill_store_bytes},
                                  {"spill_load_bytes", m.spill_load_bytes},
                                  {"stack_bytes", m.stack_bytes},
                                  {"static_shared_bytes", m.static_shared_bytes},
                                  {"dynamic_shared_bytes", m.dynamic_shared_bytes},
                                  {"threads", m.threads},
                                  {"wgmma_serialized", m.wgmma_serialized},
                                  {"compile_ms", m.compile_ms},
                                  {"ptxas_log", k.log}})
             .dump(2) +
         "\n";
}

Artifacts from_spec(const KernelSpec& spec) {
  Compiler compiler;
  const auto k = compiler.get(spec);
  std::optional<CacheEntry> entry;
  if (compiler.disk() && !k->dir.empty()) entry = compiler.disk()->load(k->key);
  return {k->name, k->key, k->source, k->cubin, k->ptx, entry ? entry->meta_json : meta_of(*k)};
}

bool is_executable(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

// cuobjdump first, then nvdisasm, each looked for in the toolkit directories before PATH.
std::optional<fs::path> find_disassembler() {
  std::vector<fs::path> dirs;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* v = std::getenv(var); v && *v) dirs.push_back(fs::path(v) / "bin");
  dirs.emplace_back("/usr/local/cuda/bin");
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      if (const auto dir = rest.substr(0, colon); !dir.empty()) dirs.emplace_back(dir);
      rest = colon == std::string_view::npos ? "" : rest.substr(colon + 1);
    }
  }
  for (const char* tool : {"cuobjdump", "nvdisasm"})
    for (const fs::path& dir : dirs)
      if (is_executable(dir / tool)) return dir / tool;
  return std::nullopt;
}

// A private temporary file holding the cubin, removed however inspect ends.
class TempCubin {
 public:
  explicit TempCubin(const std::string& cubin) {
    std::string templ = (fs::temp_directory_path() / "dmoe-inspect-XXXXXX.cubin").string();
    const int fd = ::mkstemps(templ.data(), 6);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot create a temporary file for the cubin");
    path_ = templ;
    ::close(fd);
    std::ofstream out(path_, std::ios::binary);
    out.write(cubin.data(), static_cast<std::streamsize>(cubin.size()));
    if (!out.flush()) throw std::runtime_error(fmt::format("cannot write {}", path_.string()));
  }
  ~TempCubin() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  TempCubin(const TempCubin&) = delete;
  TempCubin& operator=(const TempCubin&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Runs the disassembler with an argument vector (no shell, so no quoting) on our stdout.
void print_sass(const fs::path& tool, const std::string& cubin) {
  const TempCubin file(cubin);
  std::string tool_s = tool.string(), flag = "-sass", path_s = file.path().string();
  std::vector<char*> argv = {tool_s.data()};
  if (tool.filename() == "cuobjdump") argv.push_back(flag.data());
  argv.push_back(path_s.data());
  argv.push_back(nullptr);
  std::cout.flush();
  pid_t pid = 0;
  if (const int err = ::posix_spawn(&pid, tool_s.c_str(), nullptr, nullptr, argv.data(), environ))
    throw std::system_error(err, std::generic_category(), fmt::format("cannot run {}", tool_s));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), fmt::format("waiting for {}", tool_s));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(fmt::format("{} failed on the cubin ({} {})", tool_s,
                                         WIFEXITED(status) ? "exit status" : "signal",
                                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
}

int run_inspect(const InspectFlags& flags) {
  const bool explicit_sections = flags.source || flags.ptx || flags.sass || flags.meta;
  const bool all = !explicit_sections;
  // An explicitly requested SASS section that cannot be produced fails before anything is printed.
  const std::optional<fs::path> tool = all || flags.sass ? find_disassembler() : std::nullopt;
  if (flags.sass && !tool) throw std::runtime_error(kNoDisassembler);

  const Artifacts a = flags.key_opt->count() ? from_key(flags.key) : from_spec(flags.spec.spec());
  const int sections = all ? 4 : flags.source + flags.ptx + flags.sass + flags.meta;
  // Headers only when several sections share stdout, so that `inspect --ptx > k.ptx` is a clean file.
  const auto header = [&](std::string_view section) {
    if (sections > 1) std::cout << fmt::format("=== {}: {} ({}) ===\n", section, a.name, a.key);
  };
  const auto show = [&](bool wanted, std::string_view section, const std::string& text) {
    if (!all && !wanted) return;
    header(section);
    std::cout << text;
  };
  show(flags.source, "source", a.source);
  show(flags.ptx, "ptx", a.ptx);
  if (all || flags.sass) {
    header("sass");
    if (tool)
      print_sass(*tool, a.cubin);
    else
      std::cout << kNoDisassembler << '\n';
  }
  show(flags.meta, "meta", a.meta_json);
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& root) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* app = root.add_subcommand(
      "inspect", "Show a kernel's source, PTX, SASS and metadata (all four unless sections are chosen)");
  flags->spec.add_to(*app);
  flags->key_opt =
      app->add_option("--key", flags->key, "Look the kernel up in the disk cache by key instead of by spec")
          ->type_name("KEY");
  for (CLI::Option* opt : flags->spec.options()) flags->key_opt->excludes(opt);
  app->add_flag("--source", flags->source, "Show the generated CUDA C++ source");
  app->add_flag("--ptx", flags->ptx, "Show the PTX");
  app->add_flag("--sass", flags->sass, "Show the SASS (needs cuobjdump or nvdisasm from the CUDA toolkit)");
  app->add_flag("--meta", flags->meta, "Show the metadata (meta.json)");
  return {app, [flags] { return run_inspect(*flags); }};
}

}  // namespace dmoe::cli

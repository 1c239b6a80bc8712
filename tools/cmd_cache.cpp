// `dmoe cache ls|clear|prune` on the disk cache ($DMOE_CACHE_DIR), and `dmoe presets`.
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <iostream>
#include <iterator>
#include <memory>

#include "cli.hpp"
#include "dmoe/disk_cache.hpp"
#include "json.hpp"

namespace dmoe::cli {
namespace {

struct CacheFlags {
  bool json = false;
  std::string max_size;
};

std::string human_bytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  for (; value >= 1024 && unit + 1 < std::size(kUnits); ++unit) value /= 1024;
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string entries_text(size_t n) { return fmt::format("{} {}", n, n == 1 ? "entry" : "entries"); }

// Local time for people, UTC ISO-8601 for JSON.
std::string format_time(std::filesystem::file_time_type t, bool utc) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(std::chrono::file_clock::to_sys(t));
  std::tm tm{};
  if (utc ? !::gmtime_r(&secs, &tm) : !::localtime_r(&secs, &tm)) return "?";
  char text[32];
  std::strftime(text, sizeof text, utc ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

uint64_t total_bytes(const std::vector<CacheEntryInfo>& entries) {
  uint64_t total = 0;
  for (const CacheEntryInfo& e : entries) total += e.bytes;
  return total;
}

int run_ls(const CacheFlags& flags) {
  DiskCache cache;
  const std::vector<CacheEntryInfo> entries = cache.list();
  for (const CacheEntryInfo& e : entries) {
    const std::string& name = e.name;
    if (flags.json)
      std::cout << json::Value(json::Object{{"key", e.key},
                                            {"name", name},
                                            {"bytes", e.bytes},
                                            {"last_used", format_time(e.last_used, true)},
                                            {"dir", e.dir.string()}})
                       .dump()
                << '\n';
    else
      std::cout << fmt::format("{}  {:>10}  {}  {}\n", e.key, human_bytes(e.bytes), format_time(e.last_used, false),
                               name.empty() ? "(unnamed)" : name);
  }
  if (!flags.json)
    std::cout << fmt::format("total: {}, {} in {}\n", entries_text(entries.size()), human_bytes(total_bytes(entries)),
                             cache.root().string());
  return 0;
}

int run_clear() {
  DiskCache cache;
  std::cout << fmt::format("removed {} from {}\n", entries_text(cache.clear()), cache.root().string());
  return 0;
}

int run_prune(const CacheFlags& flags) {
  const uint64_t max_bytes = parse_size(flags.max_size);
  DiskCache cache;
  const size_t removed = cache.prune(max_bytes);
  const std::vector<CacheEntryInfo> left = cache.list();
  std::cout << fmt::format("removed {}; {} ({}) left in {}\n", entries_text(removed), entries_text(left.size()),
                           human_bytes(total_bytes(left)), cache.root().string());
  return 0;
}

std::string presets_table() {
  std::string out = fmt::format("{:<14} {:>6} {:>6} {:>7} {:>5}  {:<10} {:<5} {:>6}\n", "NAME", "H", "F", "E", "K",
                                "ACTIVATION", "GATED", "TOKENS");
  for (const Preset& p : presets()) {
    const MoeShape& s = p.shape;
    out += fmt::format("{:<14} {:>6} {:>6} {:>7} {:>5}  {:<10} {:<5} {:>6}\n", p.name, s.hidden, s.ffn, s.experts,
                       s.top_k, to_string(s.activation), s.gated ? "yes" : "no", s.tokens);
  }
  return out;
}

}  // namespace

Command add_cache_command(CLI::App& root) {
  auto flags = std::make_shared<CacheFlags>();
  CLI::App* app = root.add_subcommand("cache", "Manage the disk kernel cache ($DMOE_CACHE_DIR, else ~/.cache/dmoe)");
  CLI::App* ls = app->add_subcommand("ls", "List entries, most recently used first, and the total size");
  ls->add_flag("--json", flags->json, "Print one JSON object per entry and line: key, name, bytes, last_used, dir");
  CLI::App* clear = app->add_subcommand("clear", "Remove every entry");
  CLI::App* prune = app->add_subcommand("prune", "Remove least recently used entries until the cache fits a size");
  prune->add_option("--max-size", flags->max_size, "Size to fit, e.g. 512M, 2GiB or 0 (remove everything)")
      ->type_name("SIZE")
      ->required();
  app->require_subcommand(0, 1);
  const std::vector<Command> commands = {{ls, [flags] { return run_ls(*flags); }},
                                         {clear, [] { return run_clear(); }},
                                         {prune, [flags] { return run_prune(*flags); }}};
  return {app, [app, commands] { return run_selected(*app, commands); }};
}

Command add_presets_command(CLI::App& root) {
  CLI::App* app = root.add_subcommand("presets", "List the named model shapes usable with --preset");
  return {app, [] {
            std::cout << presets_table();
            return 0;
          }};
}

}  // namespace dmoe::cli

// dmoe tune: the autotuner's command line. --dry-run generates every candidate tile of every product and
// compiles them all in one parallel pool, reporting refusals (no GPU needed); without it, bench/tune.cpp
// compiles them the same way, then checks and times them on the GPU and records the winners; --show,
// --export and --import manage the tuning database.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <span>
#include <sstream>
#include <thread>

#include "cli.hpp"
#include "dmoe/compiler.hpp"
#include "dmoe/driver.hpp"
#include "dmoe/tuning.hpp"
#include "counts_file.hpp"
#include "layer_bench.hpp"
#include "tune.hpp"

namespace dmoe::cli {
namespace {

struct TuneFlags {
  std::string ops = "sdd_nt,dsd_nn,dsd_tn", blocks = "128", export_file, import_file, db_file, routing = "uniform",
              plot, counts;
  int64_t tokens = 0;
  bool dry_run = false, show = false, layer = false;
  int reps = 10;
  double budget = 300;
  int jobs = 0;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// "64,128" → {64, 128}; anything but positive integers is refused, naming the entry.
std::vector<int64_t> parse_blocks(const std::string& text) {
  std::vector<int64_t> blocks;
  for (const std::string& b : split(text)) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(b, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != b.size() || v <= 0)
      throw InvalidArgument(fmt::format("--blocks: '{}' is not a block size (expected e.g. 64,128,256)", b));
    blocks.push_back(v);
  }
  if (blocks.empty()) throw InvalidArgument("--blocks: no block size given");
  return blocks;
}

// "sdd_nt" → {SDD, false, true}; "sdd_nt+gelu" → the same with the fused epilogue; "sdd_nt+silu+glu" (or
// "sdd_nt+glu", the bilinear GLU) → the gated SDD.
bench::TuneOp parse_op_layout(const std::string& full) {
  const bool gated = full.size() > 4 && full.compare(full.size() - 4, 4, "+glu") == 0;
  const std::string text = gated ? full.substr(0, full.size() - 4) : full;
  const size_t plus = text.find('+');
  const std::string product = text.substr(0, plus);
  const size_t us = product.find('_');
  if (us == std::string::npos)
    throw InvalidArgument(fmt::format("--ops: '{}' is not OP_TRANS[+EPILOGUE], e.g. sdd_nt or sdd_nt+gelu", text));
  const Op op = parse_op(product.substr(0, us));
  if (!is_product(op)) throw InvalidArgument(fmt::format("--ops: {} is not a block-sparse product", text));
  const auto [ta, tb] = parse_trans(product.substr(us + 1));
  const Epilogue epi = plus == std::string::npos ? Epilogue::None : parse_epilogue(text.substr(plus + 1));
  if (epi != Epilogue::None && op != Op::SDD)
    throw InvalidArgument(fmt::format("--ops: {}: fused epilogues apply to SDD only", full));
  if (gated && (op != Op::SDD || is_gradient(epi)))
    throw InvalidArgument(fmt::format("--ops: {}: +glu applies to SDD with a forward activation only", full));
  return {op, ta, tb, epi, gated};
}

// --counts FILE for shape s: read, checked, scaled to T·K (saying so), before any GPU is asked for.
std::vector<int64_t> load_counts(const std::string& file, const MoeShape& s) {
  const bench::FittedCounts fit =
      bench::fit_counts(bench::read_counts_file(file), s.tokens, s.top_k, s.experts, file);
  const auto [lo, hi] = std::minmax_element(fit.counts.begin(), fit.counts.end());
  if (fit.scaled)
    fmt::print("--counts {}: the counts sum to {}, not T·K = {}·{} = {}: scaled proportionally (largest remainder)\n",
               file, fit.given_sum, s.tokens, s.top_k, s.tokens * s.top_k);
  fmt::print("--counts {}: {} experts, {}..{} tokens each, {} in all\n", file, fit.counts.size(), *lo, *hi,
             s.tokens * s.top_k);
  return fit.counts;
}

// Prints the progress line (stderr, rewritten in place) of a compile of `total` specs with an ETA.
void print_compile_progress(size_t done, size_t total, std::chrono::steady_clock::time_point start) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << fmt::format("\r  [{}/{}] compiled, {:.0f} s elapsed, eta {:.0f} s   ", done, total, elapsed,
                           elapsed / double(done) * double(total - done))
            << std::flush;
}

// One row per candidate of a product: registers, shared memory and compile time, or the refusal. Returns
// the number that compiled.
int print_candidates(std::span<const KernelSpec> specs, std::span<const CandidateBuild> builds) {
  int ok = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (const auto& c = builds[i].kernel) {
      ++ok;
      fmt::print("  {:<26} {:>4} regs {:>7} B smem {:>8.1f} ms  {}\n", TuningDb::tile_string(specs[i].tile),
                 c->meta.registers, c->meta.dynamic_shared_bytes + c->meta.static_shared_bytes, c->meta.compile_ms,
                 i == 0 ? "(default)" : "");
    } else {
      fmt::print("  {:<26} refused: {}\n", TuningDb::tile_string(specs[i].tile), builds[i].error);
    }
  }
  return ok;
}

int run_tune(const SpecFlags& shape_flags, const TuneFlags& f) {
  const std::filesystem::path db_path = f.db_file.empty() ? TuningDb::default_path() : std::filesystem::path(f.db_file);
  if (f.show || !f.export_file.empty() || !f.import_file.empty()) {
    TuningDb db(db_path);
    if (!f.import_file.empty()) {
      const TuningDb incoming(f.import_file);
      if (incoming.entries().empty() && !std::filesystem::exists(f.import_file))
        throw InvalidArgument(fmt::format("--import: {} does not exist", f.import_file));
      const size_t changed = db.merge(incoming);
      db.save();
      fmt::print("imported {} entries from {} into {} ({} now)\n", changed, f.import_file, db_path.string(),
                 db.entries().size());
    }
    if (!f.export_file.empty()) {
      db.save_as(f.export_file);
      fmt::print("exported {} entries from {} to {}\n", db.entries().size(), db_path.string(), f.export_file);
    }
    if (f.show) {
      fmt::print("tuning database {}: {} entries\n", db_path.string(), db.entries().size());
      for (const auto& [key, r] : db.entries())
        fmt::print("  {}\n    {}  {:.3f} ms (default {:.3f} ms, {:.2f}x)  {}\n", key, TuningDb::tile_string(r.tile),
                   r.ms, r.default_ms, r.default_ms / r.ms, r.kernel);
    }
    return 0;
  }
  if (f.budget <= 0) throw InvalidArgument(fmt::format("--budget must be positive, got {}", f.budget));
  if (f.routing != "uniform" && f.routing != "zipf")
    throw InvalidArgument(fmt::format("--routing {} is not supported (expected uniform|zipf)", f.routing));
  MoeShape s = shape_flags.shape();
  if (f.tokens) s.tokens = f.tokens;
  if (!f.counts.empty() && f.dry_run)
    throw InvalidArgument("--counts shapes the routing of the timed problems; --dry-run only compiles");
  if (f.layer && f.dry_run) throw InvalidArgument("--layer times whole layer steps on the GPU; it has no --dry-run");
  const std::vector<int64_t> blocks = parse_blocks(f.blocks);
  std::vector<int64_t> counts;
  if (!f.dry_run) {
    if (s.tokens <= 0) throw InvalidArgument("--tokens is required without --preset (the routing's token count)");
    if (!f.counts.empty()) counts = load_counts(f.counts, s);
  }
  if (f.layer) {
    bench::LayerTuneOptions o;
    o.shape = s;
    o.blocks = blocks;
    o.zipf = f.routing == "zipf";
    o.counts = counts;
    o.reps = f.reps;
    try {
      return bench::tune_layer_blocks(o);
    } catch (const NoGpu& e) {
      fmt::print(stderr, "dmoe: error: {}\n", e.what());
      return kExitUsage;
    }
  }
  if (!f.dry_run) {
    bench::TuneOptions o;
    o.shape = s;
    for (const std::string& text : split(f.ops)) o.ops.push_back(parse_op_layout(text));
    o.blocks = blocks;
    o.zipf = f.routing == "zipf";
    o.counts = counts;
    o.budget_s = f.budget;
    o.jobs = f.jobs;
    o.db = db_path;
    o.plot = f.plot;
    try {
      return bench::tune(o);
    } catch (const NoGpu& e) {  // nothing to time here: like a usage error, not a failed run
      fmt::print(stderr, "dmoe: error: {} (--dry-run compiles the candidates without a GPU)\n", e.what());
      return kExitUsage;
    }
  }
  const Arch arch = shape_flags.arch();
  const int jobs = f.jobs > 0 ? f.jobs : int(std::max(1u, std::thread::hardware_concurrency()));
  // Every product's candidates in one pool (no idle cores between products), then one table per product.
  struct Product {
    std::string label;
    size_t first, count;
  };
  std::vector<Product> products;
  std::vector<KernelSpec> all;
  for (const int64_t block : blocks) {
    s.block = block;
    validate(s);
    for (const std::string& text : split(f.ops)) {
      const auto [op, ta, tb, epi, gated] = parse_op_layout(text);
      const std::vector<KernelSpec> c = tuning_candidates(default_spec(s, op, ta, tb, arch, epi, gated));
      products.push_back({fmt::format("{} block {}: {} candidates ({})", text, s.block, c.size(),
                                      tuning_problem(c.front())),
                          all.size(), c.size()});
      all.insert(all.end(), c.begin(), c.end());
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<CandidateBuild> builds = compile_candidates(
      Compiler::global(), all, jobs, [&](size_t done, size_t n) { print_compile_progress(done, n, start); });
  std::cerr << '\n';
  const int total = int(all.size());
  int ok = 0;
  for (const Product& p : products) {
    fmt::print("{}\n", p.label);
    ok += print_candidates(std::span(all).subspan(p.first, p.count), std::span(builds).subspan(p.first, p.count));
  }
  fmt::print("dry run: {} candidates, {} compiled, {} refused (spills, serialized wgmma or compile errors)\n", total,
             ok, total - ok);
  return 0;
}

}  // namespace

Command add_tune_command(CLI::App& root) {
  CLI::App* app = root.add_subcommand("tune", "Autotune product tiles per GPU and shape (--dry-run: compile only)");
  auto shape = std::make_shared<SpecFlags>();
  shape->add_to(*app, /*with_op=*/false);
  auto f = std::make_shared<TuneFlags>();
  app->add_option("--ops", f->ops,
                  "Products to tune, OP_TRANS[+EPILOGUE] comma-separated (sdd_nt+gelu: the SDD with the fused "
                  "activation, sdd_nt+dgelu: with its gradient)")
      ->capture_default_str();
  app->add_option("--blocks", f->blocks, "Block sizes to try, comma-separated: 64,128,256")->capture_default_str();
  app->add_flag("--dry-run", f->dry_run, "List and compile the candidates (no GPU needed)");
  app->add_flag("--layer", f->layer,
                "Tune the block size on whole layer steps (use with --blocks, e.g. 64,128,256, and --routing)");
  app->add_option("--reps", f->reps, "--layer: timed steps per block size")->capture_default_str();
  app->add_option("--budget", f->budget, "Seconds for the whole run (compiles included), shared evenly over the products as each starts")->capture_default_str();
  app->add_option("--tokens", f->tokens, "Tokens of the routing to tune for (default: the preset's)");
  CLI::Option* routing = app->add_option("--routing", f->routing, "uniform|zipf")->capture_default_str();
  app->add_option("--counts", f->counts,
                  "Tokens per expert instead of --routing: E non-negative integers (whitespace, commas, # comments), "
                  "scaled to T·K if they sum otherwise, each at most T. With --layer the router is biased toward "
                  "them (approximate: the router's own top-k decides)")
      ->type_name("FILE")
      ->excludes(routing);
  app->add_option("--plot", f->plot, "Draw every candidate's time per product into FILE.svg")->type_name("FILE");
  app->add_option("--jobs", f->jobs, "Parallel compiles (default: every core)");
  app->add_option("--db", f->db_file, "Tuning database file (default: <cache dir>/tuning.json)");
  app->add_flag("--show", f->show, "Print the tuning database");
  app->add_option("--export", f->export_file, "Write the tuning database to FILE")->type_name("FILE");
  app->add_option("--import", f->import_file, "Merge FILE into the tuning database (faster records win)")
      ->type_name("FILE");
  return {app, [shape, f] { return run_tune(*shape, *f); }};
}

}  // namespace dmoe::cli

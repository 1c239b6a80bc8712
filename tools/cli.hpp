// cli.hpp — what the dmoe command files share: subcommand registration and the shape/spec flags.
//
// Each command file adds one subcommand to the root app and returns how to run it once parsing is
// done, so that commands run after CLI11 has validated the whole command line rather than inside its
// callbacks.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "dmoe/spec.hpp"

namespace dmoe::cli {

// Exit codes: 0 success, 1 failure, 2 usage or validation error.
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Command {
  CLI::App* app;
  std::function<int()> run;  // returns the exit code
};

Command add_emit_command(CLI::App& root);
Command add_compile_command(CLI::App& root);
Command add_inspect_command(CLI::App& root);
Command add_cache_command(CLI::App& root);
Command add_presets_command(CLI::App& root);
Command add_bench_command(CLI::App& root);
Command add_run_command(CLI::App& root);
Command add_tune_command(CLI::App& root);

// Runs the selected subcommand of `app` among `commands`; without one, prints app's help to stderr and
// returns kExitUsage.
int run_selected(CLI::App& app, const std::vector<Command>& commands);

// The shape and tile flags shared by emit, compile and inspect. Explicit flags override the preset.
class SpecFlags {
 public:
  // with_op: also add --op and --trans (every command that builds one spec).
  void add_to(CLI::App& app, bool with_op = true);

  // Every flag added, for commands that take another way to name a kernel (inspect --key).
  const std::vector<CLI::Option*>& options() const { return options_; }

  MoeShape shape() const;  // validated
  Arch arch() const;
  KernelSpec spec() const;  // the --op/--trans product of shape(), tile overrides applied, validated
  // Every kernel a layer of shape() needs, tile overrides applied.
  std::vector<KernelSpec> layer_specs() const;

 private:
  bool given(const CLI::Option* opt) const { return opt && opt->count() > 0; }
  KernelSpec with_tile(KernelSpec) const;

  std::string op_ = "sdd", trans_, dtype_, arch_ = "sm_90a", preset_, tile_, mma_, epilogue_, schedule_;
  int64_t hidden_ = 0, ffn_ = 0, experts_ = 0, top_k_ = 1, block_ = 128;
  int64_t warps_ = 0, renorm_ = 0, stages_ = 0, group_ = 0, cluster_ = 0, store_chunks_ = 0;
  bool gather_ = false, gated_ = false, scatter_ = false, act_warps_ = false;
  CLI::Option *renorm_opt_ = nullptr, *op_opt_ = nullptr, *trans_opt_ = nullptr, *hidden_opt_ = nullptr, *ffn_opt_ = nullptr,
              *experts_opt_ = nullptr, *top_k_opt_ = nullptr, *block_opt_ = nullptr, *dtype_opt_ = nullptr,
              *arch_opt_ = nullptr, *preset_opt_ = nullptr, *tile_opt_ = nullptr, *warps_opt_ = nullptr,
              *mma_opt_ = nullptr, *stages_opt_ = nullptr, *group_opt_ = nullptr, *cluster_opt_ = nullptr, *store_chunks_opt_ = nullptr, *schedule_opt_ = nullptr,
              *epilogue_opt_ = nullptr, *gather_opt_ = nullptr, *gated_opt_ = nullptr, *scatter_opt_ = nullptr,
              *act_warps_opt_ = nullptr;
  std::vector<CLI::Option*> options_;
};

}  // namespace dmoe::cli

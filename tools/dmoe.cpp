// dmoe — the command-line face of the JIT: emit, compile and inspect kernels, manage the disk cache.
//
// Every failure ends as one `dmoe: error: <message>` line on stderr (a compile error may add its log
// after it) and a nonzero exit: 2 for usage and validation errors, 1 for everything else.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>
#include <string_view>

#include "cli.hpp"
#include "dmoe/compiler.hpp"
#include "dmoe_version.hpp"

namespace {

using dmoe::cli::kExitFailure;
using dmoe::cli::kExitUsage;

// Some messages (CLI11's among them) span lines; the first error line must stand alone.
std::string one_line(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

int report(std::string_view message, int code) {
  std::cerr << "dmoe: error: " << one_line(message) << '\n';
  return code;
}

// The first line of a compile error is the message; the rest is the NVRTC/ptxas log, kept verbatim.
int report_compile_error(std::string_view what) {
  const size_t eol = what.find('\n');
  std::cerr << "dmoe: error: " << what.substr(0, eol) << '\n';
  if (eol != std::string_view::npos) std::cerr << what.substr(eol + 1);
  if (!what.empty() && what.back() != '\n') std::cerr << '\n';
  return kExitFailure;
}

int run(int argc, char** argv) {
  CLI::App app("dmoe: JIT kernel compiler and runtime for dropless Mixture-of-Experts", "dmoe");
  app.set_version_flag("--version", "dmoe " DMOE_VERSION);
  app.require_subcommand(0, 1);
  const std::vector<dmoe::cli::Command> commands = {
      dmoe::cli::add_emit_command(app),  dmoe::cli::add_compile_command(app), dmoe::cli::add_inspect_command(app),
      dmoe::cli::add_cache_command(app), dmoe::cli::add_presets_command(app), dmoe::cli::add_bench_command(app),
      dmoe::cli::add_run_command(app),   dmoe::cli::add_tune_command(app),
  };
  // Set after the subcommands exist, which would otherwise inherit it.
  app.footer("Run `dmoe <command> --help` for a command's flags.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" with exit code 0; CLI11 prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    return report(e.what(), kExitUsage);
  }
  return dmoe::cli::run_selected(app, commands);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const dmoe::InvalidArgument& e) {
    return report(e.what(), kExitUsage);
  } catch (const dmoe::CompileError& e) {
    return report_compile_error(e.what());
  } catch (const std::exception& e) {
    return report(e.what(), kExitFailure);
  } catch (...) {
    return report("unexpected failure", kExitFailure);
  }
}

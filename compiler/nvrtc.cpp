// NVRTC: compile one generated translation unit to a cubin for its exact arch, with the embedded headers
// supplied by name (no include paths, no toolkit headers), and parse ptxas' verbose report.
#include <nvrtc.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <regex>
#include <sstream>

#include "dmoe/compiler.hpp"
#include "templates.hpp"

namespace dmoe {
namespace {

struct Program {
  nvrtcProgram handle = nullptr;
  ~Program() {
    if (handle) nvrtcDestroyProgram(&handle);
  }
};

void check(nvrtcResult r, const char* call) {
  if (r != NVRTC_SUCCESS) throw CompileError(fmt::format("{}: {}", call, nvrtcGetErrorString(r)));
}

std::string_view line_of(std::string_view text, int line) {
  size_t pos = 0;
  for (int i = 1; i < line; ++i) {
    pos = text.find('\n', pos);
    if (pos == std::string_view::npos) return {};
    ++pos;
  }
  const size_t end = text.find('\n', pos);
  return text.substr(pos, end == std::string_view::npos ? text.npos : end - pos);
}

// Quotes the source line behind every "file(line): error" of the log, so a failure is readable without
// the generated source at hand.
std::string annotate(const std::string& log, const std::string& source) {
  static const std::regex loc(R"(^([^\s(]+)\((\d+)\): (error|warning))");
  std::ostringstream out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    out << line << '\n';
    std::smatch m;
    if (!std::regex_search(line, m, loc)) continue;
    const std::string file = m[1];
    const int n = std::stoi(m[2]);
    std::string_view text;
    if (file == "kernel.cu") text = source;
    for (const auto& t : detail::embedded_templates())
      if (t.name == file) text = t.content;
    if (std::string_view l = line_of(text, n); !l.empty()) out << fmt::format("    {:>5} | {}\n", n, l);
  }
  return out.str();
}

int match_int(const std::string& log, const std::regex& re) {
  std::smatch m;
  return std::regex_search(log, m, re) ? std::stoi(m[1]) : 0;
}

void parse_ptxas(const std::string& log, KernelMeta& meta) {
  static const std::regex regs(R"(Used (\d+) registers)");
  static const std::regex stack(R"((\d+) bytes stack frame)");
  static const std::regex spill_st(R"((\d+) bytes spill stores)");
  static const std::regex spill_ld(R"((\d+) bytes spill loads)");
  static const std::regex smem(R"((\d+) bytes smem)");
  meta.registers = match_int(log, regs);
  meta.stack_bytes = match_int(log, stack);
  meta.spill_store_bytes = match_int(log, spill_st);
  meta.spill_load_bytes = match_int(log, spill_ld);
  meta.static_shared_bytes = match_int(log, smem);
  meta.wgmma_serialized = wgmma_serialization(log).has_value();
}

}  // namespace

std::optional<std::string> wgmma_serialization(std::string_view ptxas_log) {
  // ptxas gives each reason its own code (C7510 extern calls, C7511 register pressure, C7515 accumulators
  // touched inside the pipeline, C7520 a wgmma on a divergent path, ...) and files some as "info", not
  // "warning": match the sentence, whatever the code, and quote the line.
  static constexpr std::string_view kSentence = "wgmma.mma_async instructions are serialized";
  const size_t at = ptxas_log.find(kSentence);
  if (at == std::string_view::npos) return std::nullopt;
  const size_t newline = ptxas_log.rfind('\n', at);
  const size_t begin = newline == std::string_view::npos ? 0 : newline + 1;
  const size_t end = std::min(ptxas_log.find('\n', at), ptxas_log.size());
  return std::string(ptxas_log.substr(begin, end - begin));
}

std::string nvrtc_version() {
  int major = 0, minor = 0;
  check(nvrtcVersion(&major, &minor), "nvrtcVersion");
  return fmt::format("{}.{}", major, minor);
}

CompiledKernel compile_source(const KernelSpec& spec, const std::string& source) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<const char*> header_text, header_names;
  for (const auto& t : detail::embedded_templates()) {
    header_text.push_back(t.content.data());
    header_names.push_back(t.name.data());
  }
  // NVRTC wants NUL-terminated header text; the embedded table is NUL-terminated (string literals).
  Program prog;
  check(nvrtcCreateProgram(&prog.handle, source.c_str(), "kernel.cu", int(header_text.size()),
                           header_text.data(), header_names.data()),
        "nvrtcCreateProgram");
  const std::vector<std::string> options = compile_options(spec);
  std::vector<const char*> opts;
  for (const auto& o : options) opts.push_back(o.c_str());
  const nvrtcResult result = nvrtcCompileProgram(prog.handle, int(opts.size()), opts.data());

  size_t log_size = 0;
  check(nvrtcGetProgramLogSize(prog.handle, &log_size), "nvrtcGetProgramLogSize");
  std::string log(log_size, '\0');
  check(nvrtcGetProgramLog(prog.handle, log.data()), "nvrtcGetProgramLog");
  while (!log.empty() && log.back() == '\0') log.pop_back();
  const std::string name = kernel_name(spec);
  if (result != NVRTC_SUCCESS)
    throw CompileError(fmt::format("NVRTC failed to compile {} ({}):\n{}", name, nvrtcGetErrorString(result),
                                   annotate(log, source)));

  CompiledKernel k;
  k.spec = spec;
  k.name = name;
  k.source = source;
  size_t size = 0;
  check(nvrtcGetCUBINSize(prog.handle, &size), "nvrtcGetCUBINSize");
  k.cubin.resize(size);
  check(nvrtcGetCUBIN(prog.handle, k.cubin.data()), "nvrtcGetCUBIN");
  check(nvrtcGetPTXSize(prog.handle, &size), "nvrtcGetPTXSize");
  k.ptx.resize(size);
  check(nvrtcGetPTX(prog.handle, k.ptx.data()), "nvrtcGetPTX");
  while (!k.ptx.empty() && k.ptx.back() == '\0') k.ptx.pop_back();
  k.log = log;
  if (log.find("Used ") == std::string::npos)  // metadata would silently read as zeros
    throw CompileError(fmt::format("{}: ptxas reported no resource usage; log:\n{}", name, log));
  parse_ptxas(log, k.meta);
  k.meta.threads = threads_per_cta(spec);
  k.meta.dynamic_shared_bytes = int(dynamic_shared_bytes(spec));
  k.meta.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // A spilling or wgmma-serialized kernel is a silent slowdown: refuse it loudly.
  if (k.meta.spill_store_bytes > 0 || k.meta.spill_load_bytes > 0)
    throw CompileError(fmt::format("{} spills registers ({} bytes stored, {} loaded); choose a smaller tile:\n{}",
                                   name, k.meta.spill_store_bytes, k.meta.spill_load_bytes, log));
  if (k.meta.wgmma_serialized)
    throw CompileError(fmt::format("{}: ptxas serialized its wgmma ({}); the kernel would run far below its "
                                   "speed, so it is refused. Full log:\n{}",
                                   name, *wgmma_serialization(log), log));
  return k;
}

}  // namespace dmoe

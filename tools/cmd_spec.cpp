// The shape/spec flags shared by emit, compile and inspect, and subcommand dispatch.
#include <fmt/format.h>

#include <charconv>
#include <iostream>
#include <limits>

#include "cli.hpp"

namespace dmoe::cli {
namespace {

// One positive decimal field of --tile; the library's validate() judges the value itself.
uint16_t tile_field(std::string_view tile, std::string_view text) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 ||
      value > std::numeric_limits<uint16_t>::max())
    throw InvalidArgument(fmt::format("invalid tile '{}': expected MxNxK with positive sizes, e.g. 64x64x32", tile));
  return static_cast<uint16_t>(value);
}

TileConfig parse_tile(std::string_view text, TileConfig tile) {
  const size_t x1 = text.find('x');
  const size_t x2 = x1 == std::string_view::npos ? x1 : text.find('x', x1 + 1);
  if (x2 == std::string_view::npos)
    throw InvalidArgument(fmt::format("invalid tile '{}': expected MxNxK, e.g. 64x64x32", text));
  tile.m = tile_field(text, text.substr(0, x1));
  tile.n = tile_field(text, text.substr(x1 + 1, x2 - x1 - 1));
  tile.k = tile_field(text, text.substr(x2 + 1));
  return tile;
}

// CLI11 2.1 saturates out-of-range integers silently; this check rejects them with the limit instead.
const CLI::Validator kInt64(
    [](std::string& text) -> std::string {
      int64_t value = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec == std::errc::result_out_of_range)
        return fmt::format("{} is out of the 64-bit integer range (at most {})", text,
                           std::numeric_limits<int64_t>::max());
      if (ec != std::errc() || end != text.data() + text.size()) return fmt::format("{} is not an integer", text);
      return "";
    },
    "", "INT64");

CLI::Option* add_int(CLI::App& app, const std::string& name, int64_t& value, const std::string& help) {
  return app.add_option(name, value, help)->type_name("N")->check(kInt64);
}

}  // namespace

void SpecFlags::add_to(CLI::App& app, bool with_op) {
  if (with_op) {
    op_opt_ = app.add_option("--op", op_,
                             "Kernel: sdd|dsd|dds, or a routing kernel: jitter|router|bins|permute|topology|"
                             "gather|scatter|scatter_grad|router_grad, or a gated experts' elementwise kernel: "
                             "glu|glu_grad")
                  ->type_name("OP")
                  ->capture_default_str();
    renorm_opt_ = add_int(app, "--renorm", renorm_, "Router weights renormalized by their p-norm: 0 (off), 1, 2");
    trans_opt_ = app.add_option("--trans", trans_, "Operand transposes: nt|nn|tn|tt (default: nt for sdd, else nn)")
                     ->type_name("AB");
  }
  hidden_opt_ = add_int(app, "--hidden", hidden_, "Model width H (required without --preset)");
  ffn_opt_ = add_int(app, "--ffn", ffn_, "Expert FFN width F (required without --preset)");
  experts_opt_ = add_int(app, "--experts", experts_, "Number of experts E (required without --preset)");
  top_k_opt_ = add_int(app, "--top-k", top_k_, "Experts per token K")->capture_default_str();
  block_opt_ = add_int(app, "--block", block_, "Block-sparse block size: 64|128|256")->capture_default_str();
  dtype_opt_ = app.add_option("--dtype", dtype_, "Element type: bf16|fp16 (default: the preset's, else bf16)")
                   ->type_name("TYPE");
  arch_opt_ = app.add_option("--arch", arch_, "Target: sm_80|sm_86|sm_89|sm_90a")->type_name("ARCH");
  arch_opt_->capture_default_str();
  preset_opt_ =
      app.add_option("--preset", preset_, "Start from a named model shape (see `dmoe presets`)")->type_name("NAME");
  tile_opt_ = app.add_option("--tile", tile_, "Override the CTA tile, e.g. 64x64x32")->type_name("MxNxK");
  warps_opt_ = add_int(app, "--warps", warps_, "Override the warps per CTA: 4|8 (simt, mma)");
  mma_opt_ = app.add_option("--mma", mma_,
                            "Product kernel family: simt|wgmma|mma (default: wgmma on sm_90a, mma (mma.sync) on "
                            "sm_80/86/89)")
                 ->type_name("KIND");
  stages_opt_ = add_int(app, "--stages", stages_, "Override the pipeline stages (wgmma: 2..8, mma: 2..5)");
  group_opt_ = add_int(app, "--group", group_,
                       "Override the wgmma tile order: outer indices per scheduler group, 1|2|4|8|16 (default 8)");
  cluster_opt_ = add_int(app, "--cluster", cluster_,
                         "wgmma CTAs per cluster: 1, or 2 (two adjacent column tiles; one CTA multicasts their "
                         "shared A tile to both)");
  store_chunks_opt_ = add_int(app, "--store-chunks", store_chunks_,
                              "wgmma, plain or forward activation epilogue: stage the output in N 64×64 chunk buffers "
                              "per consumer warpgroup instead of the whole tile (frees shared memory for stages; the "
                              "deepest ring that fits unless --stages says otherwise)");
  schedule_opt_ = app.add_option("--schedule", schedule_,
                                 "wgmma consumers' schedule: cooperative (both warpgroups share a tile) or pingpong "
                                 "(each owns whole tiles; one's epilogue runs under the other's main loop)")
                      ->type_name("S");
  epilogue_opt_ = app.add_option("--epilogue", epilogue_,
                                 "Fused SDD epilogue: none|gelu|silu|relu (forward), dgelu|dsilu|drelu (backward); "
                                 "glu and glu_grad: the activation, none|gelu|silu|relu (default: the preset's)")
                      ->type_name("EPI");
  gather_opt_ = app.add_flag("--gather", gather_,
                             "SDD (wgmma): gather A's rows through a row map as the kernel loads them (the layer's "
                             "forward SDD)");
  gated_opt_ = app.add_flag("--gated", gated_,
                            "SDD (wgmma): the gated experts' first layer, act(x·W1ᵀ)·(x·V1ᵀ) with both pre-activations "
                            "kept (the activation is --epilogue's)");
  scatter_opt_ = app.add_flag("--scatter", scatter_,
                              "DSD nn (wgmma): write each output row to the token row a row map names (the layer's "
                              "dX product at top-k 1, the padded scatter fused)");
  act_warps_opt_ = app.add_flag("--act-warps,!--no-act-warps", act_warps_,
                                "SDD (wgmma, cooperative, activation or its gradient): the producer warpgroup's idle "
                                "warps finish the epilogue and store the outputs while the consumers start their next "
                                "tile (the default of such SDDs)");
  options_ = {hidden_opt_, ffn_opt_,  experts_opt_, top_k_opt_, block_opt_,  dtype_opt_,   arch_opt_,
              preset_opt_, tile_opt_,  warps_opt_,   mma_opt_,   stages_opt_, group_opt_, cluster_opt_, store_chunks_opt_, schedule_opt_,
              epilogue_opt_, gather_opt_, gated_opt_, scatter_opt_, act_warps_opt_};
  if (with_op) options_.insert(options_.begin(), {op_opt_, trans_opt_, renorm_opt_});
}

MoeShape SpecFlags::shape() const {
  MoeShape s;
  if (given(preset_opt_)) {
    s = preset(preset_);
  } else {
    for (const CLI::Option* opt : {hidden_opt_, ffn_opt_, experts_opt_})
      if (!given(opt)) throw InvalidArgument(fmt::format("{} is required without --preset", opt->get_name()));
  }
  if (given(hidden_opt_)) s.hidden = hidden_;
  if (given(ffn_opt_)) s.ffn = ffn_;
  if (given(experts_opt_)) s.experts = experts_;
  if (given(top_k_opt_)) s.top_k = top_k_;
  if (given(block_opt_)) s.block = block_;
  if (given(dtype_opt_)) s.dtype = parse_dtype(dtype_);
  validate(s);
  return s;
}

Arch SpecFlags::arch() const { return parse_arch(arch_); }

KernelSpec SpecFlags::spec() const {
  const MoeShape s = shape();
  const Op op = parse_op(op_);
  if (!is_product(op)) {
    if (given(trans_opt_)) throw InvalidArgument(fmt::format("--trans does not apply to {} kernels", op_));
    if (renorm_ < 0 || renorm_ > 2)
      throw InvalidArgument(fmt::format("--renorm {} is not supported (expected 0, 1 or 2)", renorm_));
    KernelSpec k = routing_spec(s, op, arch(), static_cast<int>(renorm_));
    if (given(epilogue_opt_)) k.epilogue = parse_epilogue(epilogue_);  // glu, glu_grad: the activation
    if (gather_) throw InvalidArgument(fmt::format("--gather does not apply to {} kernels (SDD only)", op_));
    if (gated_) throw InvalidArgument(fmt::format("--gated does not apply to {} kernels (SDD only)", op_));
    if (scatter_) throw InvalidArgument(fmt::format("--scatter does not apply to {} kernels (DSD only)", op_));
    return with_tile(k);
  }
  if (given(renorm_opt_)) throw InvalidArgument(fmt::format("--renorm does not apply to {} kernels", op_));
  const auto [trans_a, trans_b] = parse_trans(given(trans_opt_) ? trans_ : op == Op::SDD ? "nt" : "nn");
  // The epilogue takes part in the default tile (a fused SDD may default to another schedule): the spec
  // shown is the one the layer would run.
  KernelSpec k = default_spec(s, op, trans_a, trans_b, arch(),
                              given(epilogue_opt_) ? parse_epilogue(epilogue_) : Epilogue::None, gated_);
  if (gather_) k = with_gather(k);
  k.scatter = scatter_;
  return with_tile(k);
}

std::vector<KernelSpec> SpecFlags::layer_specs() const {
  std::vector<KernelSpec> specs = layer_kernels(shape(), arch());
  for (KernelSpec& k : specs) k = with_tile(k);
  return specs;
}

KernelSpec SpecFlags::with_tile(KernelSpec k) const {
  bool pingpong = k.tile.pingpong;
  if (given(schedule_opt_)) {
    if (schedule_ != "cooperative" && schedule_ != "pingpong")
      throw InvalidArgument(fmt::format("--schedule {} is not known (expected cooperative or pingpong)", schedule_));
    pingpong = schedule_ == "pingpong";
  }
  if (given(mma_opt_)) {
    const Mma m = parse_mma(mma_);
    if (m != k.tile.mma)
      k.tile = m == Mma::Wgmma     ? wgmma_tile(128, 128)
               : m == Mma::MmaSync ? mma_sync_tile(128, 128, k.arch)
                                   : TileConfig{};
  }
  if (given(tile_opt_)) {
    k.tile = parse_tile(tile_, k.tile);
    // A new wgmma or mma tile gets the deepest ring that fits unless --stages says otherwise.
    if (k.tile.mma == Mma::Wgmma) k.tile.stages = wgmma_tile(k.tile.m, k.tile.n, pingpong, k.gated).stages;
    if (k.tile.mma == Mma::MmaSync) k.tile.stages = mma_sync_tile(k.tile.m, k.tile.n, k.arch, k.tile.k).stages;
  }
  if (given(schedule_opt_)) {
    k.tile.pingpong = pingpong;
    // The ping-pong schedule's second staging buffer takes stages: the deepest ring that fits, unless
    // --stages says otherwise.
    if (k.tile.mma == Mma::Wgmma && !given(stages_opt_)) k.tile.stages = wgmma_tile(k.tile.m, k.tile.n, pingpong, k.gated).stages;
  }
  // These tile fields are 8 bits: a value that would wrap is refused before validate() could see it.
  auto u8 = [](int64_t v, const char* what, const char* expected) {
    if (v <= 0 || v > std::numeric_limits<uint8_t>::max())
      throw InvalidArgument(fmt::format("{} = {} is not supported{}", what, v, expected));
    return static_cast<uint8_t>(v);
  };
  if (given(stages_opt_)) k.tile.stages = u8(stages_, "tile stages", "");
  if (given(warps_opt_)) k.tile.warps = u8(warps_, "tile warps", " (expected 4 or 8)");
  if (given(group_opt_)) k.tile.group = u8(group_, "tile group", " (expected 1, 2, 4, 8 or 16)");
  if (given(cluster_opt_)) k.tile.cluster = u8(cluster_, "cluster", " (expected 1 or 2)");
  if (given(store_chunks_opt_)) {
    if (store_chunks_ < 0 || store_chunks_ > std::numeric_limits<uint8_t>::max())
      throw InvalidArgument(fmt::format("store chunks = {} is not supported", store_chunks_));
    k.tile.store_chunks = static_cast<uint8_t>(store_chunks_);
    if (k.tile.mma == Mma::Wgmma && !given(stages_opt_))
      k.tile.stages = wgmma_tile(k.tile.m, k.tile.n, k.tile.pingpong, k.gated, k.tile.store_chunks).stages;
  }
  if (given(act_warps_opt_)) {
    k.tile.act_warps = act_warps_;
    // Their second buffer (the gated SDD's g tile, a gradient's pre-activation chunk) takes room: the
    // deepest ring that fits, unless --stages says otherwise.
    if (k.tile.mma == Mma::Wgmma && !given(stages_opt_)) k.tile.stages = static_cast<uint8_t>(wgmma_stages(k));
  }
  validate(k);
  return k;
}

int run_selected(CLI::App& app, const std::vector<Command>& commands) {
  for (const Command& c : commands)
    if (c.app->parsed()) return c.run();
  // Named as typed ("dmoe cache"), not just by the subcommand's own name.
  std::cerr << app.help(app.get_parent() ? app.get_parent()->get_name() : "");
  return kExitUsage;
}

}  // namespace dmoe::cli

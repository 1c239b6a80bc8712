// dmoe tune on the GPU. For each block size and product: a routing of the shape's T tokens (uniform or
// Zipf), its topology, random operands (rotated past 2× L2), the SIMT reference kernel's output once, then
// each candidate: poisoned output, one checked run (relative error against the reference below 1e-2,
// every element written), and the median of 7 timed batches. The default tile is timed first; the
// fastest correct candidate is recorded when it beats the default, and the database is saved after each
// product, so an interruption keeps what finished.
#include "tune.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <random>

#include "bench_util.hpp"
#include "dmoe/compiler.hpp"
#include "dmoe/kernel_cache.hpp"
#include "dmoe/products.hpp"
#include "dmoe/tuning.hpp"

namespace dmoe::bench {
namespace {

constexpr int kBatches = 7;
constexpr double kBatchMs = 5;
constexpr double kTolerance = 1e-2;

struct Result {
  KernelSpec spec;
  double ms = NAN;
  std::string error;  // compile refusal or wrong result
};

}  // namespace

int tune(const TuneOptions& opt) {
  if (opt.shape.dtype != DType::BF16)  // fill_random draws bf16 values
    throw InvalidArgument(fmt::format("dmoe tune times bf16 products only, got {}", to_string(opt.shape.dtype)));
  Device dev(0);
  KernelCache cache(dev);
  OwnedStream stream(dev);
  const DeviceProperties& props = dev.properties();
  const Arch arch = device_arch(props);
  TuningDb db(opt.db);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  fmt::print("dmoe tune on {} ({} SMs), database {}, budget {:.0f} s\n", props.name, props.sm_count,
             opt.db.string(), opt.budget_s);

  struct Row {
    std::string label;
    std::vector<Result> results;
    size_t best = 0;
    double waste = 0;
  };
  std::vector<Row> rows;
  for (int64_t block : opt.blocks) {
    MoeShape s = opt.shape;
    s.block = block;
    validate(s);
    const std::vector<int64_t> counts = expert_counts(s.tokens, s.top_k, s.experts, opt.zipf);
    const reference::HostTopology topo = reference::topology_from_counts(counts, int32_t(block), int32_t(s.ffn));
    const DeviceTopology dtopo(dev, topo);
    const int64_t t_pad = topo.padded_rows();
    const double waste = double(t_pad - s.tokens * s.top_k) / double(s.tokens * s.top_k);
    for (const auto& [op, ta, tb] : opt.ops) {
      const KernelSpec base = default_spec(s, op, ta, tb, arch);
      const std::vector<KernelSpec> candidates = tuning_candidates(base);
      const reference::ProductShapes shp = reference::product_shapes(base, topo, t_pad);
      const int64_t a_elems = reference::elements(base, topo, shp.a_rows, shp.a_cols, op == Op::DSD);
      const int64_t b_elems = reference::elements(base, topo, shp.b_rows, shp.b_cols, op == Op::DDS);
      const int64_t c_elems = reference::elements(base, topo, shp.c_rows, shp.c_cols, op == Op::SDD);
      const int64_t set_bytes = (a_elems + b_elems + c_elems) * 2;
      const int sets = int(std::clamp<int64_t>(2 * props.l2_bytes / set_bytes + 1, 1, 8));
      std::vector<DeviceBuffer> bufs;
      for (int i = 0; i < sets; ++i) {
        bufs.emplace_back(dev, a_elems * 2);
        fill_random(dev, bufs.back().get(), a_elems * 2, 0x1000 + 3 * i);
        bufs.emplace_back(dev, b_elems * 2);
        fill_random(dev, bufs.back().get(), b_elems * 2, 0x1001 + 3 * i);
        bufs.emplace_back(dev, c_elems * 2);
      }
      auto args = [&](int set) {
        return ProductArgs{bufs[3 * set].get(), bufs[3 * set + 1].get(), bufs[3 * set + 2].get(), dtopo.view,
                           topo.block_rows, nullptr};
      };
      auto value = [&](uint16_t b) { return s.dtype == DType::BF16 ? reference::from_bf16(b) : reference::from_fp16(b); };
      // The reference: the SIMT kernel on set 0.
      KernelSpec simt = base;
      simt.tile = TileConfig{64, 64, 32, 8, 1};
      launch_product(cache, simt, args(0), stream.get());
      std::vector<uint16_t> ref(c_elems), out(c_elems);
      dev.copy_to_host(ref.data(), bufs[2].get(), c_elems * 2, stream.get());

      Row row{fmt::format("{}_{}{} b{}", to_string(op), ta ? 't' : 'n', tb ? 't' : 'n', block), {}, 0, waste};
      fmt::print("{}: {} candidates, padding waste {:.1f}%\n", row.label, candidates.size(), 100 * waste);
      std::fflush(stdout);
      for (size_t i = 0; i < candidates.size(); ++i) {
        Result r{candidates[i]};
        if (i > 0 && elapsed() > opt.budget_s) {
          r.error = "budget spent";
          row.results.push_back(r);
          continue;
        }
        try {
          dev.fill_u8(bufs[2].get(), 0xff, c_elems * 2, stream.get());
          launch_product(cache, r.spec, args(0), stream.get());
          dev.copy_to_host(out.data(), bufs[2].get(), c_elems * 2, stream.get());
          double num = 0, den = 0;
          int64_t unwritten = 0;
          for (int64_t j = 0; j < c_elems; ++j) {
            const double o = value(out[j]), e = value(ref[j]);
            if (std::isnan(o) && !std::isnan(e)) ++unwritten;
            if (std::isnan(o) || std::isnan(e)) continue;
            num += (o - e) * (o - e), den += e * e;
          }
          const double err = std::sqrt(num / std::max(den, 1e-30));
          if (unwritten || !(err < kTolerance))
            throw std::runtime_error(fmt::format("wrong result: rel err {:.2e}, {} elements unwritten", err, unwritten));
          // Time: batches of back-to-back launches over the rotating sets, median of kBatches.
          EventTimer timer(dev);
          int reps = 1;
          timer.start(stream.get());
          launch_product(cache, r.spec, args(0), stream.get());
          timer.stop(stream.get());
          reps = std::max(1, int(kBatchMs / std::max<double>(timer.elapsed_ms(), 1e-3)));
          std::vector<double> ms;
          for (int b = 0, next = 0; b < kBatches; ++b) {
            timer.start(stream.get());
            for (int k = 0; k < reps; ++k) launch_product(cache, r.spec, args(next++ % sets), stream.get());
            timer.stop(stream.get());
            ms.push_back(timer.elapsed_ms() / reps);
          }
          r.ms = median(ms);
        } catch (const std::exception& e) {
          r.error = std::string(e.what()).substr(0, std::string(e.what()).find('\n'));
        }
        fmt::print("  [{}/{}] {:<26} {}   eta {:.0f} s\n", i + 1, candidates.size(), TuningDb::tile_string(r.spec.tile),
                   r.error.empty() ? fmt::format("{:.4f} ms", r.ms) : r.error,
                   elapsed() / double(i + 1) * double(candidates.size() - i - 1));
        std::fflush(stdout);
        if (r.error.empty() && (std::isnan(row.results.empty() ? NAN : row.results[row.best].ms) ||
                                r.ms < row.results[row.best].ms))
          row.best = row.results.size();
        row.results.push_back(r);
      }
      const Result& best = row.results[row.best];
      const Result& def = row.results.front();
      if (best.error.empty() && def.error.empty() && row.best != 0) {
        const TuningKey key{props.name, props.sm_count, props.driver_version, nvrtc_version(),
                            tuning_problem(best.spec), token_bucket(s.tokens)};
        db.put(key, TuningRecord{best.spec.tile, best.ms, def.ms, kernel_name(best.spec)});
        db.save();
      }
      rows.push_back(std::move(row));
    }
  }

  fmt::print("\n{:<16} {:>8} {:<26} {:>10} {:<26} {:>10} {:>8}\n", "product", "waste", "default", "ms", "best", "ms",
             "speedup");
  for (const Row& r : rows) {
    const Result &def = r.results.front(), &best = r.results[r.best];
    fmt::print("{:<16} {:>7.1f}% {:<26} {:>10.4f} {:<26} {:>10.4f} {:>7.2f}x\n", r.label, 100 * r.waste,
               TuningDb::tile_string(def.spec.tile), def.ms, TuningDb::tile_string(best.spec.tile), best.ms,
               def.ms / best.ms);
  }
  if (!opt.plot.empty()) {
    // One row of bars per product: every candidate's time relative to the default (shorter is faster).
    std::ofstream svg(opt.plot);
    const int width = 900, bar = 6, gap = 30;
    int height = 40, y = 20;
    for (const Row& r : rows) height += int(r.results.size()) * bar + gap;
    svg << fmt::format("<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' "
                       "font-size='11'>\n", width, height);
    for (const Row& r : rows) {
      svg << fmt::format("<text x='4' y='{}'>{} (default {:.4f} ms)</text>\n", y, r.label, r.results.front().ms);
      y += 6;
      for (const Result& c : r.results) {
        if (c.error.empty() && !std::isnan(r.results.front().ms)) {
          const double rel = c.ms / r.results.front().ms;
          svg << fmt::format("<rect x='200' y='{}' width='{:.0f}' height='{}' fill='{}'><title>{} {:.4f} ms</title></rect>\n",
                             y, std::min(rel, 2.0) * 300, bar - 1, &c == &r.results[r.best] ? "#d62728" : "#1f77b4",
                             TuningDb::tile_string(c.spec.tile), c.ms);
        }
        y += bar;
      }
      svg << fmt::format("<line x1='500' y1='{}' x2='500' y2='{}' stroke='black'/>\n", y - int(r.results.size()) * bar, y);
      y += gap - 6;
    }
    svg << "</svg>\n";
    fmt::print("plot: {}\n", opt.plot);
  }
  return 0;
}

}  // namespace dmoe::bench

// dmoe tune on the GPU.
//
// First every candidate tile of every product (tuning_candidates: the default first), with each product's
// SIMT reference, is compiled in one pool on every core (compile_candidates; a refused candidate is
// reported, never timed). Then for each block size and product: a routing of the shape's T tokens (uniform,
// Zipf or the user's tokens per expert), its topology, random operands (rotated past 2× L2) and the SIMT reference kernel's output, once
// (it must write every element). Then each candidate: its output poisoned (0xff… is NaN in bf16), one
// checked run (the whole output copied to the host and compared on every core: every element finite,
// i.e. written, and the relative Frobenius error against the reference below 1e-2), then batches of
// back-to-back launches over the rotating operand sets, ~5 ms each, timed with events: 3 batches, ending
// there when their median is over 1.3× the fastest correct candidate so far (it cannot win), else 7; the
// time is the median. The default tile is timed first; the fastest correct candidate is then timed
// against the default once more in alternating batches (8 pairs: the same power state for both, and no
// bias from picking the fastest of many noisy medians) and recorded only when the median per-pair ratio
// says it is ≥ 1 % faster; the database is saved after each product, so an interruption keeps what
// finished. Ctrl-C (SIGINT) once stops timing: the product being tuned keeps its best so far (confirmed
// and recorded like any other), the remaining products are skipped and the table is printed; a second Ctrl-C kills.
// The --budget (seconds from the start, compiles included) is shared out as the products start: each gets
// an even share of what is left, so one that finishes early leaves its time to the rest and the last
// product is not starved by the first (session 12: DeepSeek's third product timed 53 of 142). Past its
// share a product times no new candidate, except its default. The ETA on each progress line covers every
// product's remaining candidates at the rate so far, or the budget's end when that comes first.
#include "tune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <csignal>
#include <cmath>
#include <fstream>
#include <random>
#include <span>
#include <thread>

#include "bench_util.hpp"
#include "counts_file.hpp"
#include "paired.hpp"
#include "dmoe/compiler.hpp"
#include "dmoe/kernel_cache.hpp"
#include "dmoe/products.hpp"
#include "dmoe/tuning.hpp"

namespace dmoe::bench {
namespace {

constexpr int kMinBatches = 3, kMaxBatches = 7;
constexpr double kBatchMs = 5;
constexpr double kSlower = 1.3;  // after kMinBatches, a candidate this much slower than the best stops
// The best candidate against the default once more, in alternating batches (A B B A …, kConfirmPairs
// pairs): the fastest of ~100 noisy medians is biased fast, and at the H200's power cap the clock drifts
// over a product's tuning. It is recorded only if the median per-pair ratio says it is faster by kConfirm.
constexpr int kConfirmPairs = 8;
constexpr double kConfirm = 1.01;
constexpr double kTolerance = 1e-2;

// Set by the first SIGINT while tuning; the handler then restores the default action (a second Ctrl-C kills).
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);
}

// Installs on_interrupt for the timing loop's lifetime; the previous handler comes back afterwards.
class InterruptScope {
 public:
  InterruptScope() : previous_(std::signal(SIGINT, on_interrupt)) { g_interrupted = 0; }
  ~InterruptScope() { std::signal(SIGINT, previous_ == SIG_ERR ? SIG_DFL : previous_); }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
  bool interrupted() const { return g_interrupted != 0; }

 private:
  void (*previous_)(int);
};

struct Result {
  KernelSpec spec;
  double ms = NAN;
  int batches = 0;
  std::string error;  // compile refusal, wrong result or "budget spent"
};

// Σ (out − ref)² over the finite elements of out, and how many are not finite (unwritten: still the NaN
// poison). An empty ref compares against zeros: Σ out². bf16 only (tune refuses fp16). On every core.
struct Comparison {
  double squares = 0;
  int64_t nonfinite = 0;
};
// fp16 bits to double, inline (the comparison runs over hundreds of millions of elements).
double fp16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(double(m), -24)
                   : e == 31 ? (m ? NAN : INFINITY)
                             : std::ldexp(double(m | 1024), e - 25);
  return h >> 15 ? -v : v;
}

// Σ (out − ref)² over the finite elements of out (ref empty: Σ out²) and the count of non-finite ones,
// the 16-bit values read as bf16 or fp16.
Comparison compare(std::span<const uint16_t> out, std::span<const uint16_t> ref, DType dtype) {
  const bool fp16 = dtype == DType::FP16;
  auto value = [fp16](uint16_t bits) {
    return fp16 ? fp16_value(bits) : double(std::bit_cast<float>(uint32_t{bits} << 16));
  };
  const int64_t n = int64_t(out.size());
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  std::vector<Comparison> parts(threads);
  {
    std::vector<std::jthread> pool;
    for (int64_t t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        Comparison c;
        for (int64_t j = n * t / threads; j < n * (t + 1) / threads; ++j) {
          const double o = value(out[j]), e = ref.empty() ? 0.0 : value(ref[j]);
          if (!std::isfinite(o)) {
            ++c.nonfinite;
            continue;
          }
          c.squares += (o - e) * (o - e);
        }
        parts[t] = c;
      });
  }  // joins
  Comparison total;
  for (const Comparison& c : parts) total.squares += c.squares, total.nonfinite += c.nonfinite;
  return total;
}

// One product to tune: its shape (block set), candidates and their compile refusals.
struct Product {
  MoeShape shape;
  Op op;
  bool trans_a, trans_b;
  std::vector<KernelSpec> candidates;
  std::vector<std::string> refused;  // per candidate: "" or why it did not compile
  KernelSpec reference;              // the SIMT kernel whose output is the reference
  std::string reference_refused;
  // Gated: the SIMT kernel has no gated form; `reference` (the activation, pre-activation kept) gives a
  // and act(a), `gate_reference` (plain) g = A·B2, and the host forms act(a)·g.
  KernelSpec gate_reference;
  std::string gate_reference_refused;
  std::string label;
};

}  // namespace

int tune(const TuneOptions& opt) {
  if (opt.shape.dtype != DType::BF16)  // fill_random draws bf16 values
    throw InvalidArgument(fmt::format("dmoe tune times bf16 products only, got {}", to_string(opt.shape.dtype)));
  if (!opt.counts.empty() &&
      fit_counts(opt.counts, opt.shape.tokens, opt.shape.top_k, opt.shape.experts, "(TuneOptions)").scaled)
    throw InvalidArgument(fmt::format("TuneOptions::counts must sum to T·K = {}", opt.shape.tokens * opt.shape.top_k));
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

  // Every product's candidates, compiled up front in one pool.
  std::vector<Product> products;
  for (int64_t block : opt.blocks) {
    MoeShape s = opt.shape;
    s.block = block;
    validate(s);
    for (const auto& [op, ta, tb, epi, gated] : opt.ops) {
      Product p{s, op, ta, tb, tuning_candidates(default_spec(s, op, ta, tb, arch, epi, gated)), {}, {}, {}, {}};
      p.reference = p.candidates.front();
      p.reference.tile = TileConfig{64, 64, 32, 8, 1, Mma::Simt};
      p.reference.gated = false;
      if (gated) {
        p.gate_reference = p.reference;
        p.gate_reference.epilogue = Epilogue::None;
      }
      p.label = fmt::format("{} b{}", product_label(p.candidates.front()), block);
      products.push_back(std::move(p));
    }
  }
  {
    std::vector<KernelSpec> all;
    for (const Product& p : products) {
      all.insert(all.end(), p.candidates.begin(), p.candidates.end());
      all.push_back(p.reference);
      if (p.candidates.front().gated) all.push_back(p.gate_reference);
    }
    const size_t step = std::max<size_t>(1, all.size() / 10);
    fmt::print("compiling {} kernels ({} products)\n", all.size(), products.size());
    std::fflush(stdout);
    const std::vector<CandidateBuild> builds =
        compile_candidates(cache.compiler(), all, opt.jobs, [&](size_t done, size_t n) {
          if (done % step && done != n) return;
          fmt::print("  [{}/{}] compiled, {:.0f} s elapsed, eta {:.0f} s\n", done, n, elapsed(),
                     elapsed() / double(done) * double(n - done));
          std::fflush(stdout);
        });
    size_t next = 0, refused = 0;
    for (Product& p : products) {
      for (size_t i = 0; i < p.candidates.size(); ++i, ++next) {
        p.refused.push_back(builds[next].error);
        refused += !builds[next].error.empty();
      }
      p.reference_refused = builds[next++].error;
      if (p.candidates.front().gated) p.gate_reference_refused = builds[next++].error;
    }
    fmt::print("compiled in {:.1f} s: {} refused (spills, serialized wgmma or compile errors)\n", elapsed(), refused);
    std::fflush(stdout);
  }
  // Progress over every product: candidates to time, and those timed so far since `timing_start`.
  int64_t to_time = 0, timed = 0;
  for (const Product& p : products)
    for (const std::string& r : p.refused) to_time += r.empty();
  const double timing_start = elapsed();
  auto eta = [&] {
    const double rate = (elapsed() - timing_start) / double(std::max<int64_t>(timed, 1));
    return std::min(rate * double(to_time - timed), std::max(0.0, opt.budget_s - elapsed()) + rate);
  };

  struct Row {
    std::string label;
    std::vector<Result> results;
    size_t best = 0;
    double waste = 0;
    double confirmed = NAN;  // the paired speedup of the best over the default (default / best)
    bool rejected = false;   // the best did not confirm: the default stays
  };
  std::vector<Row> rows;
  EventTimer timer(dev);
  const InterruptScope interrupt;
  size_t product_index = 0;
  for (int64_t block : opt.blocks) {
    if (interrupt.interrupted()) break;
    MoeShape s = opt.shape;
    s.block = block;
    const std::vector<int64_t> counts =
        opt.counts.empty() ? expert_counts(s.tokens, s.top_k, s.experts, opt.zipf) : opt.counts;
    const reference::HostTopology topo = reference::topology_from_counts(counts, int32_t(block), int32_t(s.ffn));
    const DeviceTopology dtopo(dev, topo);
    const int64_t t_pad = topo.padded_rows();
    const double waste = double(t_pad - s.tokens * s.top_k) / double(s.tokens * s.top_k);
    for (size_t product_in_block = 0; product_in_block < opt.ops.size() && !interrupt.interrupted();
         ++product_in_block) {
      const double product_start = elapsed();
      const double product_share =
          std::max(0.0, opt.budget_s - product_start) / double(products.size() - product_index);
      const Product& p = products.at(product_index++);
      const KernelSpec& base = p.candidates.front();
      const Op op = p.op;
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
      // A fused epilogue's second tensor (SDD's layout): the pre-activation it keeps (an output, not
      // checked) or, for a gradient, reads (random input; the same for every set). The gated SDD also
      // multiplies a second B (per set) and keeps the gate's pre-activation (aux2).
      const bool gated = base.gated;
      DeviceBuffer aux, aux2;
      std::vector<DeviceBuffer> b2s;
      if (base.epilogue != Epilogue::None || gated) {
        aux = DeviceBuffer(dev, c_elems * 2);
        fill_random(dev, aux.get(), c_elems * 2, 0x2000);
      }
      if (gated) {
        aux2 = DeviceBuffer(dev, c_elems * 2);
        for (int i = 0; i < sets; ++i) {
          b2s.emplace_back(dev, b_elems * 2);
          fill_random(dev, b2s.back().get(), b_elems * 2, 0x3000 + i);
        }
      }
      auto args = [&](int set) {
        return ProductArgs{bufs[3 * set].get(), bufs[3 * set + 1].get(), bufs[3 * set + 2].get(), dtopo.view,
                           topo.block_rows, aux.get(), nullptr, gated ? b2s[set].get() : nullptr, aux2.get()};
      };
      // The reference: the SIMT kernel on set 0, into a poisoned output it must fill.
      if (!p.reference_refused.empty() || !p.gate_reference_refused.empty())
        throw std::runtime_error(fmt::format("{}: the SIMT reference did not compile: {}{}", p.label,
                                             p.reference_refused, p.gate_reference_refused));
      // A forward epilogue's pre-activation is an output too (the gated SDD's both): poisoned and checked
      // like c.
      const bool aux_out = !is_gradient(base.epilogue) && (base.epilogue != Epilogue::None || gated);
      std::vector<uint16_t> ref(c_elems), out(c_elems), ref_aux, ref_aux2;
      Comparison aux_norm, aux2_norm;
      auto unwritten = [&](const std::vector<uint16_t>& v, const char* what) {
        const Comparison c = compare(v, {}, base.dtype);
        if (c.nonfinite)
          throw std::runtime_error(fmt::format("{}: the SIMT reference left {} {} elements unwritten", p.label,
                                               c.nonfinite, what));
        return c;
      };
      dev.fill_u8(bufs[2].get(), 0xff, c_elems * 2, stream.get());
      if (aux_out) dev.fill_u8(aux.get(), 0xff, c_elems * 2, stream.get());
      if (gated) {
        // a and act(a) (with B), then g (with B2) from the SIMT kernels; h = act(a)·g on the host, from the
        // rounded values.
        const bool act = base.epilogue != Epilogue::None;
        ProductArgs ra = args(0);
        ra.b2 = nullptr, ra.aux2 = nullptr, ra.aux = act ? aux.get() : nullptr;
        launch_product(cache, p.reference, ra, stream.get());
        std::vector<uint16_t> act_a(c_elems);
        dev.copy_to_host(act_a.data(), bufs[2].get(), c_elems * 2, stream.get());
        ref_aux = act_a;
        if (act) dev.copy_to_host(ref_aux.data(), aux.get(), c_elems * 2, stream.get());
        ProductArgs rg{bufs[0].get(), b2s[0].get(), bufs[2].get(), dtopo.view, topo.block_rows, nullptr};
        dev.fill_u8(bufs[2].get(), 0xff, c_elems * 2, stream.get());
        launch_product(cache, p.gate_reference, rg, stream.get());
        ref_aux2.resize(c_elems);
        dev.copy_to_host(ref_aux2.data(), bufs[2].get(), c_elems * 2, stream.get());
        unwritten(act_a, "hidden");
        aux2_norm = unwritten(ref_aux2, "gate pre-activation");
        for (int64_t j = 0; j < c_elems; ++j)
          ref[j] = reference::to_bf16(reference::from_bf16(act_a[j]) * reference::from_bf16(ref_aux2[j]));
        aux_norm = unwritten(ref_aux, "pre-activation");
      } else {
        launch_product(cache, p.reference, args(0), stream.get());
        dev.copy_to_host(ref.data(), bufs[2].get(), c_elems * 2, stream.get());
        if (aux_out) {
          ref_aux.resize(c_elems);
          dev.copy_to_host(ref_aux.data(), aux.get(), c_elems * 2, stream.get());
          aux_norm = unwritten(ref_aux, "pre-activation");
        }
      }
      const Comparison ref_norm = compare(ref, {}, base.dtype);
      if (ref_norm.nonfinite)
        throw std::runtime_error(fmt::format("{}: the SIMT reference left {} of {} elements unwritten or non-finite",
                                             p.label, ref_norm.nonfinite, c_elems));

      // One device output against its reference (`norm`: the reference's Σ squares); throws naming it.
      auto verify = [&](const void* dptr, const std::vector<uint16_t>& want, const Comparison& norm, const char* what) {
        dev.copy_to_host(out.data(), dptr, c_elems * 2, stream.get());
        const Comparison c = compare(out, want, base.dtype);
        const double err = std::sqrt(c.squares / std::max(norm.squares, 1e-30));
        if (c.nonfinite || !(err < kTolerance))
          throw std::runtime_error(
              fmt::format("wrong {}: rel err {:.2e}, {} elements unwritten", what, err, c.nonfinite));
      };

      Row row{p.label, {}, 0, waste};
      fmt::print("{}: {} candidates, padding waste {:.1f}%\n", row.label, p.candidates.size(), 100 * waste);
      std::fflush(stdout);
      auto best_ms = [&] { return row.results.empty() ? NAN : row.results[row.best].ms; };
      for (size_t i = 0; i < p.candidates.size(); ++i) {
        Result r{p.candidates[i]};
        if (!p.refused[i].empty()) {
          r.error = "refused: " + p.refused[i];
        } else if (i > 0 && (elapsed() - product_start > product_share || interrupt.interrupted())) {
          r.error = interrupt.interrupted() ? "interrupted" : "budget spent";
          row.results.push_back(r);
          continue;
        } else {
          try {
            // The check: the whole poisoned output written, close to the reference.
            dev.fill_u8(bufs[2].get(), 0xff, c_elems * 2, stream.get());
            if (aux_out) dev.fill_u8(aux.get(), 0xff, c_elems * 2, stream.get());
            if (gated) dev.fill_u8(aux2.get(), 0xff, c_elems * 2, stream.get());
            launch_product(cache, r.spec, args(0), stream.get());
            verify(bufs[2].get(), ref, ref_norm, "result");
            if (aux_out) verify(aux.get(), ref_aux, aux_norm, "pre-activation");
            if (gated) verify(aux2.get(), ref_aux2, aux2_norm, "gate pre-activation");
            // Time: batches of back-to-back launches over the rotating sets, ~kBatchMs each; the median.
            timer.start(stream.get());
            launch_product(cache, r.spec, args(0), stream.get());
            timer.stop(stream.get());
            const int reps = std::max(1, int(kBatchMs / std::max<double>(timer.elapsed_ms(), 1e-3)));
            const double best = best_ms();  // NaN before the first correct candidate: never stops early
            std::vector<double> ms;
            for (int b = 0, next = 0; b < kMaxBatches; ++b) {
              if (b == kMinBatches && median(ms) > kSlower * best) break;
              timer.start(stream.get());
              for (int k = 0; k < reps; ++k) launch_product(cache, r.spec, args(next++ % sets), stream.get());
              timer.stop(stream.get());
              ms.push_back(timer.elapsed_ms() / reps);
            }
            r.ms = median(ms);
            r.batches = int(ms.size());
          } catch (const std::exception& e) {
            r.error = std::string(e.what()).substr(0, std::string(e.what()).find('\n'));
          }
          ++timed;
        }
        fmt::print("  [{}/{}] {:<26} {}   eta {:.0f} s\n", i + 1, p.candidates.size(),
                   TuningDb::tile_string(r.spec.tile),
                   !r.error.empty()            ? r.error
                   : r.batches < kMaxBatches ? fmt::format("{:.4f} ms ({} batches: over {}x the best)", r.ms,
                                                             r.batches, kSlower)
                                               : fmt::format("{:.4f} ms", r.ms),
                   eta());
        std::fflush(stdout);
        if (r.error.empty() && (std::isnan(best_ms()) || r.ms < best_ms())) row.best = row.results.size();
        row.results.push_back(r);
      }
      const Result& best = row.results[row.best];
      const Result& def = row.results.front();
      if (best.error.empty() && def.error.empty() && row.best != 0) {
        // The confirmation (kConfirmPairs; a fraction of a second, so it runs after an interrupt too): default
        // and best alternate, each batch ~kBatchMs.
        const Result* side[2] = {&def, &best};
        int reps[2], next = 0;
        for (int k = 0; k < 2; ++k) reps[k] = std::max(1, int(kBatchMs / side[k]->ms));
        for (int k = 0; k < 2; ++k) launch_product(cache, side[k]->spec, args(next++ % sets), stream.get());
        const auto ms = alternate(kConfirmPairs, [&](int k) {
          timer.start(stream.get());
          for (int r = 0; r < reps[k]; ++r) launch_product(cache, side[k]->spec, args(next++ % sets), stream.get());
          timer.stop(stream.get());
          return double(timer.elapsed_ms()) / reps[k];
        });
        row.confirmed = paired_ratio(ms[1], ms[0]);  // default / best
        fmt::print("  confirmation, {} alternating pairs: default {:.4f} ms, best {:.4f} ms, {:.3f}x{}\n",
                   kConfirmPairs, median(ms[0]), median(ms[1]), row.confirmed,
                   row.confirmed >= kConfirm ? "" : fmt::format(" (under {:.2f}x: the default stays)", kConfirm));
        if (row.confirmed >= kConfirm) {
          const TuningKey key{props.name, props.sm_count, props.driver_version, nvrtc_version(),
                              tuning_problem(best.spec), token_bucket(s.tokens)};
          db.put(key, TuningRecord{best.spec.tile, median(ms[1]), median(ms[0]), kernel_name(best.spec)});
          db.save();
        } else {
          row.rejected = true;
        }
      }
      rows.push_back(std::move(row));
    }
  }

  if (interrupt.interrupted())
    fmt::print("\ninterrupted: {} of {} products tuned (each recorded product keeps its best so far)\n",
               rows.size(), products.size());
  // "timed": candidates checked and timed of those generated; fewer when the budget or an interrupt
  // stopped the product early (its best is then the best of those).
  // "paired": the confirmation's speedup (default / best in alternating batches); the best is recorded only
  // when it reaches kConfirm ("kept default" otherwise).
  fmt::print("\n{:<16} {:>8} {:<26} {:>10} {:<26} {:>10} {:>8} {:>9} {:>8}\n", "product", "waste", "default", "ms",
             "best", "ms", "speedup", "timed", "paired");
  for (const Row& r : rows) {
    const Result &def = r.results.front(), &best = r.results[r.best];
    const size_t timed_here = size_t(std::count_if(r.results.begin(), r.results.end(),
                                                   [](const Result& x) { return !std::isnan(x.ms); }));
    fmt::print("{:<16} {:>7.1f}% {:<26} {:>10.4f} {:<26} {:>10.4f} {:>7.2f}x {:>9} {:>8}{}\n", r.label, 100 * r.waste,
               TuningDb::tile_string(def.spec.tile), def.ms, TuningDb::tile_string(best.spec.tile), best.ms,
               def.ms / best.ms, fmt::format("{}/{}", timed_here, r.results.size()),
               std::isnan(r.confirmed) ? std::string("-") : fmt::format("{:.2f}x", r.confirmed),
               r.rejected ? "  kept default" : "");
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
  fmt::print("done in {:.1f} s (compiles included)\n", elapsed());
  return 0;
}

}  // namespace dmoe::bench

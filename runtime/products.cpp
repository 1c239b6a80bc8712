#include "dmoe/products.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>

#include "dmoe/tuning.hpp"

namespace dmoe {
namespace {

bool sparse_transposed(const KernelSpec& k) {
  return k.op == Op::DSD ? k.trans_a : k.op == Op::DDS ? k.trans_b : false;
}

int64_t wgmma_tiles(const KernelSpec& k, int64_t max_block_rows) {
  return sm90_product_tiles(static_cast<int32_t>(k.op), k.trans_a, k.trans_b, k.block, k.hidden, k.ffn, k.experts,
                            k.tile.m, k.tile.n, max_block_rows);
}

// One TMA operand: a dense row-major [rows, cols] tensor, or the sparse data [blocks, B, B].
struct Operand {
  const void* ptr;
  bool sparse;
  int64_t rows, cols;  // dense shape; for sparse: rows = number of blocks, cols = B
};

// The tensor map of an operand loaded K-major ({64, tile rows} boxes) or MN-major ({64, 64} boxes).
void encode(TensorMap& map, const KernelSpec& k, const Operand& o, bool k_major, int tile_rows,
            const char* role) {
  if (reinterpret_cast<uintptr_t>(o.ptr) % 16 != 0)
    throw InvalidArgument(fmt::format("{}: operand {} at {} is not 16-byte aligned (TMA needs 16)",
                                      kernel_name(k), role, o.ptr));
  const bool bf16 = k.dtype == DType::BF16;
  const uint32_t box1 = k_major ? uint32_t(tile_rows) : 64;
  if (o.sparse) {
    const uint64_t dims[3] = {uint64_t(k.block), uint64_t(k.block), uint64_t(o.rows)};
    const uint64_t strides[2] = {uint64_t(k.block) * 2, uint64_t(k.block) * k.block * 2};
    const uint32_t box[3] = {64, box1, 1};
    encode_tensor_map(map, bf16, 3, o.ptr, dims, strides, box);
  } else {
    const uint64_t dims[2] = {uint64_t(o.cols), uint64_t(o.rows)};
    const uint64_t strides[1] = {uint64_t(o.cols) * 2};
    const uint32_t box[2] = {64, box1};
    encode_tensor_map(map, bf16, 2, o.ptr, dims, strides, box);
  }
}

void launch_wgmma(KernelCache& cache, const KernelSpec& k, const ProductArgs& args, Stream stream) {
  // The kernel first: the cache validates a spec it has not seen, so a tile that fits no block (which
  // counts no tiles) is refused here instead of launching nothing without a word.
  const LoadedFunction& fn = cache.get(k);
  const int64_t tiles = wgmma_tiles(k, args.max_block_rows);
  if (tiles == 0) return;
  const int64_t tcap = int64_t{args.max_block_rows} * k.block, fe = int64_t{k.experts} * k.ffn, h = k.hidden;
  const int64_t blocks = int64_t{args.max_block_rows} * (k.ffn / k.block);
  const Operand sparse_a{args.a, true, blocks, k.block}, sparse_b{args.b, true, blocks, k.block};
  auto dense = [](const void* p, int64_t rows, int64_t cols) { return Operand{p, false, rows, cols}; };
  Operand a{}, b{};
  const bool st = sparse_transposed(k);
  switch (k.op) {
    case Op::SDD:
      a = k.trans_a ? dense(args.a, h, tcap) : dense(args.a, tcap, h);
      b = k.trans_b ? dense(args.b, fe, h) : dense(args.b, h, fe);
      break;
    case Op::DSD: {
      a = sparse_a;
      const int64_t krows = st ? tcap : fe;  // op(B)'s reduction extent
      b = k.trans_b ? dense(args.b, h, krows) : dense(args.b, krows, h);
      break;
    }
    default: {
      b = sparse_b;
      const int64_t kcols = st ? fe : tcap;  // op(A)'s reduction extent
      a = k.trans_a ? dense(args.a, kcols, h) : dense(args.a, h, kcols);
      break;
    }
  }
  // The output: SDD's blocks, or the dense C; stored in {64, m} boxes from the staged tile.
  Operand c{};
  if (k.op == Op::SDD) c = Operand{args.c, true, blocks, k.block};
  else if (k.op == Op::DSD) c = dense(args.c, st ? fe : tcap, h);
  else c = dense(args.c, h, st ? tcap : fe);
  Sm90ProductArgs p{};
  encode(p.b, k, b, k.trans_b, k.tile.n, "b");
  if (k.gated) encode(p.b2, k, Operand{args.b2, false, b.rows, b.cols}, k.trans_b, k.tile.n, "b2");
  else p.b2 = p.b;  // never read
  if (k.gather) {  // A is read row by row through gather_rows (cp.async: 16-byte aligned rows; H % 64 == 0)
    if (reinterpret_cast<uintptr_t>(args.a) % 16 != 0)
      throw InvalidArgument(fmt::format("{}: operand a at {} is not 16-byte aligned (the gather's cp.async needs 16)",
                                        kernel_name(k), args.a));
    p.a = p.b;  // never read
  } else {
    encode(p.a, k, a, !k.trans_a, k.tile.m, "a");
  }
  if (k.scatter && reinterpret_cast<uintptr_t>(args.c) % 16 != 0)  // rows leave in 16-byte vectors
    throw InvalidArgument(fmt::format("{}: operand c at {} is not 16-byte aligned (the scatter's stores need 16)",
                                      kernel_name(k), args.c));
  // Chunked staging stores each consumer warpgroup's 64 rows on their own. Scatter: never read (rows are
  // stored through scatter_rows).
  encode(p.c, k, c, true, k.tile.store_chunks > 0 ? 64 : k.tile.m, "c");
  if (args.aux)
    encode(p.aux, k, Operand{args.aux, true, blocks, k.block}, true, k.tile.store_chunks > 0 ? 64 : k.tile.m, "aux");
  else p.aux = p.c;  // never read: only gradient epilogues load it, and they require aux
  if (args.aux2) encode(p.aux2, k, Operand{args.aux2, true, blocks, k.block}, true, k.tile.m, "aux2");
  else p.aux2 = p.c;  // never read
  p.p = args;
  // A cluster's CTAs share each cluster tile (tiles / cluster of them); the persistent grid is the
  // clusters the GPU holds at once (a cluster's CTAs share a GPC: possibly fewer than SMs / cluster).
  const int64_t cl = k.tile.cluster;
  const int64_t resident = cl > 1 ? fn.max_active_clusters : cache.device().properties().sm_count;
  const int64_t grid = cl * std::min<int64_t>(tiles / cl, resident);
  void* params[] = {&p};
  launch(fn, static_cast<unsigned>(grid), 1, 1, static_cast<unsigned>(threads_per_cta(k)), params, stream);
}

// The process's tuning database, loaded on first use.
const TuningDb* tuning_db() {
  static std::once_flag once;
  static std::optional<TuningDb> db;
  std::call_once(once, [] {
    try {
      db.emplace(TuningDb::default_path());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dmoe: warning: %s; using the default tiles\n", e.what());
    }
  });
  return db ? &*db : nullptr;
}

}  // namespace

KernelSpec tuned_spec(const Device& dev, const KernelSpec& k, int64_t tokens) {
  const TuningDb* db = tuning_db();
  if (!db) return k;
  const DeviceProperties& p = dev.properties();
  return apply_tuning(
      k, db->find({p.name, p.sm_count, p.driver_version, nvrtc_version(), tuning_problem(k), token_bucket(tokens)}));
}

KernelSpec tuned_spec(const Device& dev, const MoeShape& s, Op op, bool trans_a, bool trans_b, Epilogue epilogue,
                      bool gated) {
  return tuned_spec(dev, default_spec(s, op, trans_a, trans_b, device_arch(dev.properties()), epilogue, gated), s.tokens);
}

int64_t product_grid(const KernelSpec& k, int32_t max_block_rows) {
  if (k.tile.mma == Mma::Wgmma) return wgmma_tiles(k, max_block_rows);
  return product_ctas(static_cast<int32_t>(k.op), sparse_transposed(k), k.block, k.hidden, k.ffn, k.experts,
                      k.tile.m, k.tile.n, max_block_rows);
}

void launch_product(KernelCache& cache, const KernelSpec& spec, const ProductArgs& args, Stream stream) {
  const Topology& t = args.topo;
  if (!args.a || !args.b || !args.c || !t.row_indices || !t.column_indices || !t.offsets ||
      !t.column_indices_t || !t.offsets_t || !t.block_offsets_t || !t.block_rows)
    throw InvalidArgument(fmt::format("{}: an operand or topology pointer is null", kernel_name(spec)));
  if (args.max_block_rows < 0)
    throw InvalidArgument(fmt::format("max_block_rows must not be negative, got {}", args.max_block_rows));
  if (is_gradient(spec.epilogue) && !args.aux)
    throw InvalidArgument(fmt::format("{}: the {} epilogue reads the saved pre-activation: ProductArgs::aux is null",
                                      kernel_name(spec), to_string(spec.epilogue)));
  if (spec.epilogue == Epilogue::None && !spec.gated && args.aux)
    throw InvalidArgument(fmt::format("{}: ProductArgs::aux is set but the spec has no epilogue", kernel_name(spec)));
  if (spec.gather && !args.gather_rows)
    throw InvalidArgument(fmt::format("{}: the spec gathers A's rows but ProductArgs::gather_rows is null",
                                      kernel_name(spec)));
  if (spec.gated && !args.b2)
    throw InvalidArgument(fmt::format("{}: the gated SDD multiplies a second B: ProductArgs::b2 is null", kernel_name(spec)));
  if (!spec.gated && (args.b2 || args.aux2))
    throw InvalidArgument(fmt::format("{}: ProductArgs::b2 or aux2 is set but the spec is not gated", kernel_name(spec)));
  if (spec.scatter && !args.scatter_rows)
    throw InvalidArgument(fmt::format("{}: the spec scatters its rows but ProductArgs::scatter_rows is null",
                                      kernel_name(spec)));
  if (!spec.scatter && args.scatter_rows)
    throw InvalidArgument(fmt::format("{}: ProductArgs::scatter_rows is set but the spec does not scatter",
                                      kernel_name(spec)));
  if (!spec.gather && args.gather_rows)
    throw InvalidArgument(fmt::format("{}: ProductArgs::gather_rows is set but the spec does not gather",
                                      kernel_name(spec)));
  if (spec.tile.mma == Mma::Wgmma) return launch_wgmma(cache, spec, args, stream);
  // SIMT and mma.sync: the same decomposition (product_ctas), one CTA per output tile; mma.sync copies
  // operands and stores the output 16 bytes at a time.
  if (spec.tile.mma == Mma::MmaSync)
    for (auto [role, p] : {std::pair{"a", args.a}, {"b", args.b}, {"c", static_cast<const void*>(args.c)}})
      if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
        throw InvalidArgument(fmt::format("{}: operand {} at {} is not 16-byte aligned (cp.async needs 16)",
                                          kernel_name(spec), role, p));
  constexpr int64_t kMaxGrid = (int64_t{1} << 31) - 1;
  const int64_t grid = product_grid(spec, args.max_block_rows);
  if (grid > kMaxGrid)
    throw InvalidArgument(fmt::format("{} needs {} CTAs for max_block_rows = {}, over the launch limit {}",
                                      kernel_name(spec), grid, args.max_block_rows, kMaxGrid));
  const LoadedFunction& fn = cache.get(spec);  // first, as in launch_wgmma: validates an unseen spec
  if (grid == 0) return;
  ProductArgs copy = args;
  void* params[] = {&copy};
  launch(fn, static_cast<unsigned>(grid), 1, 1, static_cast<unsigned>(threads_per_cta(spec)), params, stream);
}

}  // namespace dmoe

#include "dmoe/products.hpp"

#include <fmt/format.h>

namespace dmoe {

int64_t product_grid(const KernelSpec& k, int32_t max_block_rows) {
  const bool sparse_t = k.op == Op::DSD ? k.trans_a : k.op == Op::DDS ? k.trans_b : false;
  return product_ctas(static_cast<int32_t>(k.op), sparse_t, k.block, k.hidden, k.ffn, k.experts, k.tile.m,
                      k.tile.n, max_block_rows);
}

void launch_product(KernelCache& cache, const KernelSpec& spec, const ProductArgs& args, Stream stream) {
  const Topology& t = args.topo;
  if (!args.a || !args.b || !args.c || !t.row_indices || !t.column_indices || !t.offsets ||
      !t.column_indices_t || !t.offsets_t || !t.block_offsets_t || !t.block_rows)
    throw InvalidArgument(fmt::format("{}: an operand or topology pointer is null", kernel_name(spec)));
  if (args.max_block_rows < 0)
    throw InvalidArgument(fmt::format("max_block_rows must not be negative, got {}", args.max_block_rows));
  constexpr int64_t kMaxGrid = (int64_t{1} << 31) - 1;
  const int64_t grid = product_grid(spec, args.max_block_rows);
  if (grid > kMaxGrid)
    throw InvalidArgument(fmt::format("{} needs {} CTAs for max_block_rows = {}, over the launch limit {}",
                                      kernel_name(spec), grid, args.max_block_rows, kMaxGrid));
  if (grid == 0) return;
  const LoadedFunction& fn = cache.get(spec);
  ProductArgs copy = args;
  void* params[] = {&copy};
  launch(fn, static_cast<unsigned>(grid), 1, 1, static_cast<unsigned>(threads_per_cta(spec)), params, stream);
}

}  // namespace dmoe

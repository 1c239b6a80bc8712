// dmoe/products.hpp — launching the block-sparse products SDD, DSD and DDS.
#pragma once

#include "dmoe/args.cuh"
#include "dmoe/kernel_cache.hpp"

namespace dmoe {

// CTAs the product launches for a row capacity of max_block_rows (= T_pad upper bound / B); for the
// persistent wgmma kernel, the number of output tiles (it launches min(tiles, SMs) CTAs).
int64_t product_grid(const KernelSpec&, int32_t max_block_rows);

// The spec dmoe runs for a product on this device: default_spec, with the tile `dmoe tune` recorded in
// the tuning database (TuningDb::default_path(), read once per process) for this device, problem and
// token bucket, if any. A database that cannot be read is reported once on stderr and ignored.
KernelSpec tuned_spec(const Device&, const MoeShape&, Op, bool trans_a, bool trans_b,
                      Epilogue epilogue = Epilogue::None, bool gated = false);
// The same for a spec already formed (a variant such as the scatter form, with its default tile): the
// record of its tuning problem at this token count applies only if the variant accepts its tile
// (apply_tuning).
KernelSpec tuned_spec(const Device&, const KernelSpec&, int64_t tokens);

// Launches spec over args on stream. The operand roles and shapes are documented on KernelSpec and
// ProductArgs. Nothing is read back from the device: the true T_pad is read by the kernel from
// args.topo.block_rows. Throws InvalidArgument for null pointers, a negative capacity or a grid over the
// launch limit, and CudaError for driver failures. A hit does no allocation or formatting.
void launch_product(KernelCache&, const KernelSpec&, const ProductArgs&, Stream);

}  // namespace dmoe

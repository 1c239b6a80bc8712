// dmoe/reference.hpp — CPU references: the MoE topology in closed form and by sorting, and the
// block-sparse products in fp64. Tests check every device kernel against these.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "dmoe/spec.hpp"

namespace dmoe::reference {

// The blocked CSR + COO topology of S [T_pad, E·F] with transpose metadata (dmoe-semantics.md).
struct HostTopology {
  int32_t block = 0, ffn = 0, experts = 0;
  int32_t block_rows = 0;  // T_pad / B
  std::vector<int32_t> row_indices, column_indices, offsets;
  std::vector<int32_t> column_indices_t, offsets_t, block_offsets_t;
  int64_t blocks() const { return static_cast<int64_t>(row_indices.size()); }
  int64_t padded_rows() const { return int64_t{block_rows} * block; }
};

// Closed form from per-expert token counts: expert e owns ⌈count_e / B⌉ block rows, each holding the
// F/B block columns e·F/B … (e+1)·F/B − 1. Throws InvalidArgument if a size overflows int32.
HostTopology topology_from_counts(std::span<const int64_t> counts, int32_t block, int32_t ffn);

// The transpose metadata recomputed the generic way (stable argsort of column_indices): an oracle for
// the closed form.
HostTopology with_sorted_transpose(HostTopology);

// Shapes of a product's operands for a row capacity (T_pad upper bound) `capacity_rows`. Dense operands
// are row-major [rows, cols]; a sparse operand is the topology's data [blocks, B, B]. Outputs whose
// dimension is T_pad are written only up to the true T_pad (valid_rows/valid_cols).
struct ProductShapes {
  int64_t a_rows = 0, a_cols = 0, b_rows = 0, b_cols = 0, c_rows = 0, c_cols = 0;
  int64_t valid_rows = 0, valid_cols = 0;
};
ProductShapes product_shapes(const KernelSpec&, const HostTopology&, int64_t capacity_rows);
int64_t elements(const KernelSpec&, const HostTopology&, int64_t rows, int64_t cols, bool sparse);

// fp64 product over the topology. For SDD the result is the data [blocks, B, B]; otherwise the dense
// C [c_rows, c_cols] with zeros where the kernel writes nothing.
std::vector<double> product(const KernelSpec&, const HostTopology&, int64_t capacity_rows,
                            std::span<const float> a, std::span<const float> b);

// The fused SDD epilogues in fp64 (Epilogue in spec.hpp). activation(e, x) is act(x) for a forward
// epilogue; activation_grad(e, x) is act'(x) for either the forward or the gradient epilogue of the
// same activation. None: identity (derivative 1).
double activation(Epilogue, double x);
double activation_grad(Epilogue, double x);

// The gated experts' elementwise ops (Op::Glu, Op::GluGrad) in fp64 over equally long operands (the sparse
// data, or any prefix of it); act is a forward epilogue (None, GeluTanh, Silu, Relu):
//   glu:      h = act(a) · g
//   glu_grad: da = dh · g · act'(a), dg = dh · act(a)
// Throws InvalidArgument for a gradient epilogue or operands of different lengths.
std::vector<double> glu(Epilogue act, std::span<const float> a, std::span<const float> g);
struct GluGrad {
  std::vector<double> da, dg;
};
GluGrad glu_grad(Epilogue act, std::span<const float> dh, std::span<const float> a, std::span<const float> g);

// Round to nearest even, as the device's cvt.rn does.
uint16_t to_bf16(float);
float from_bf16(uint16_t);
uint16_t to_fp16(float);
float from_fp16(uint16_t);

// ‖out − ref‖_F / ‖ref‖_F; NaN or Inf anywhere in out gives +Inf.
double relative_error(std::span<const double> ref, std::span<const double> out);

}  // namespace dmoe::reference

#include "dmoe/reference.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "parallel.hpp"

namespace dmoe::reference {

HostTopology topology_from_counts(std::span<const int64_t> counts, int32_t block, int32_t ffn) {
  HostTopology t;
  t.block = block;
  t.ffn = ffn;
  t.experts = static_cast<int32_t>(counts.size());
  const int32_t fb = ffn / block;
  std::vector<int64_t> rows_of(counts.size());
  int64_t block_rows = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] < 0) throw InvalidArgument(fmt::format("count of expert {} is negative: {}", e, counts[e]));
    rows_of[e] = (counts[e] + block - 1) / block;
    block_rows += rows_of[e];
  }
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (block_rows * block > kMax || block_rows * fb > kMax)
    throw InvalidArgument(fmt::format("padded rows {} or blocks {} overflow the 32-bit limit {}",
                                      block_rows * block, block_rows * fb, kMax));
  t.block_rows = static_cast<int32_t>(block_rows);
  const int64_t n = block_rows * fb;
  t.row_indices.resize(n);
  t.column_indices.resize(n);
  t.offsets.resize(block_rows + 1);
  t.column_indices_t.resize(n);
  t.block_offsets_t.resize(n);
  t.offsets_t.assign(size_t(t.experts) * fb + 1, 0);

  int32_t r = 0;
  int64_t pos_t = 0;  // position in column order
  for (int32_t e = 0; e < t.experts; ++e) {
    const int32_t first_row = r;
    for (int64_t i = 0; i < rows_of[e]; ++i, ++r) {
      t.offsets[r] = r * fb;
      for (int32_t j = 0; j < fb; ++j) {
        t.row_indices[int64_t(r) * fb + j] = r;
        t.column_indices[int64_t(r) * fb + j] = e * fb + j;
      }
    }
    // Column e·F/B + j holds the expert's block rows in order.
    for (int32_t j = 0; j < fb; ++j) {
      const int32_t c = e * fb + j;
      for (int32_t row = first_row; row < r; ++row, ++pos_t) {
        t.column_indices_t[pos_t] = row;
        t.block_offsets_t[pos_t] = row * fb + j;
      }
      t.offsets_t[c + 1] = static_cast<int32_t>(pos_t);
    }
  }
  t.offsets[block_rows] = static_cast<int32_t>(n);
  return t;
}

HostTopology with_sorted_transpose(HostTopology t) {
  const int64_t n = t.blocks();
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return t.column_indices[x] < t.column_indices[y]; });
  t.block_offsets_t = order;
  for (int64_t i = 0; i < n; ++i) t.column_indices_t[i] = t.row_indices[order[i]];
  std::fill(t.offsets_t.begin(), t.offsets_t.end(), 0);
  for (int64_t i = 0; i < n; ++i) ++t.offsets_t[t.column_indices[i] + 1];
  std::partial_sum(t.offsets_t.begin(), t.offsets_t.end(), t.offsets_t.begin());
  return t;
}

ProductShapes product_shapes(const KernelSpec& k, const HostTopology& t, int64_t capacity) {
  const int64_t H = k.hidden, FE = int64_t(k.experts) * k.ffn, tp = t.padded_rows();
  ProductShapes s;
  auto dense = [](bool trans, int64_t rows, int64_t cols, int64_t& r, int64_t& c) {
    r = trans ? cols : rows;
    c = trans ? rows : cols;
  };
  switch (k.op) {
    case Op::SDD:  // op(A) [T, H], op(B) [H, FE]
      dense(k.trans_a, capacity, H, s.a_rows, s.a_cols);
      dense(k.trans_b, H, FE, s.b_rows, s.b_cols);
      s.c_rows = capacity, s.c_cols = FE, s.valid_rows = tp, s.valid_cols = FE;
      break;
    case Op::DSD:
      s.a_rows = capacity, s.a_cols = FE;
      if (!k.trans_a) {  // S [T, FE] · op(B) [FE, H]
        dense(k.trans_b, FE, H, s.b_rows, s.b_cols);
        s.c_rows = capacity, s.c_cols = H, s.valid_rows = tp, s.valid_cols = H;
      } else {  // Sᵀ [FE, T] · op(B) [T, H]
        dense(k.trans_b, capacity, H, s.b_rows, s.b_cols);
        s.c_rows = FE, s.c_cols = H, s.valid_rows = FE, s.valid_cols = H;
      }
      break;
    case Op::DDS:
      s.b_rows = capacity, s.b_cols = FE;
      if (!k.trans_b) {  // op(A) [H, T] · S [T, FE]
        dense(k.trans_a, H, capacity, s.a_rows, s.a_cols);
        s.c_rows = H, s.c_cols = FE, s.valid_rows = H, s.valid_cols = FE;
      } else {  // op(A) [H, FE] · Sᵀ [FE, T]
        dense(k.trans_a, H, FE, s.a_rows, s.a_cols);
        s.c_rows = H, s.c_cols = capacity, s.valid_rows = H, s.valid_cols = tp;
      }
      break;
    default: throw InvalidArgument(fmt::format("{} is not a block-sparse product", to_string(k.op)));
  }
  return s;
}

int64_t elements(const KernelSpec& k, const HostTopology& t, int64_t rows, int64_t cols, bool sparse) {
  return sparse ? t.blocks() * k.block * k.block : rows * cols;
}

double activation(Epilogue e, double x) {
  constexpr double c0 = 0.7978845608028654, c1 = 0.044715;  // sqrt(2/pi), GELU's cubic coefficient
  switch (e) {
    case Epilogue::GeluTanh:
    case Epilogue::GeluTanhGrad: return 0.5 * x * (1.0 + std::tanh(c0 * (x + c1 * x * x * x)));
    case Epilogue::Silu:
    case Epilogue::SiluGrad: return x / (1.0 + std::exp(-x));
    case Epilogue::Relu:
    case Epilogue::ReluGrad: return x > 0 ? x : 0.0;
    case Epilogue::None: return x;
  }
  return x;
}

double activation_grad(Epilogue e, double x) {
  constexpr double c0 = 0.7978845608028654, c1 = 0.044715;
  switch (e) {
    case Epilogue::GeluTanh:
    case Epilogue::GeluTanhGrad: {
      const double t = std::tanh(c0 * (x + c1 * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c0 * (1.0 + 3.0 * c1 * x * x);
    }
    case Epilogue::Silu:
    case Epilogue::SiluGrad: {
      const double s = 1.0 / (1.0 + std::exp(-x));
      return s * (1.0 + x * (1.0 - s));
    }
    case Epilogue::Relu:
    case Epilogue::ReluGrad: return x > 0 ? 1.0 : 0.0;
    case Epilogue::None: return 1.0;
  }
  return 1.0;
}

namespace {

void check_glu(Epilogue act, std::initializer_list<std::pair<const char*, size_t>> sizes) {
  if (is_gradient(act))
    throw InvalidArgument(fmt::format("glu takes a forward activation (none|gelu|silu|relu), not {}", to_string(act)));
  const auto& first = *sizes.begin();
  for (const auto& [name, n] : sizes)
    if (n != first.second)
      throw InvalidArgument(fmt::format("glu operand {} has {} elements, {} has {}", name, n, first.first, first.second));
}

}  // namespace

std::vector<double> glu(Epilogue act, std::span<const float> a, std::span<const float> g) {
  check_glu(act, {{"a", a.size()}, {"g", g.size()}});
  std::vector<double> h(a.size());
  for (size_t i = 0; i < a.size(); ++i) h[i] = activation(act, a[i]) * double(g[i]);
  return h;
}

GluGrad glu_grad(Epilogue act, std::span<const float> dh, std::span<const float> a, std::span<const float> g) {
  check_glu(act, {{"dh", dh.size()}, {"a", a.size()}, {"g", g.size()}});
  GluGrad r;
  r.da.resize(a.size());
  r.dg.resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    r.da[i] = double(dh[i]) * double(g[i]) * activation_grad(act, a[i]);
    r.dg[i] = double(dh[i]) * activation(act, a[i]);
  }
  return r;
}

namespace {

// op(X) of a row-major operand X [rows, cols] as a row-major fp64 matrix (op(X) = Xᵀ when trans): the
// transposes are resolved once so the product loops below run along contiguous rows.
std::vector<double> op_matrix(std::span<const float> x, int64_t cols, bool trans) {
  const int64_t rows = cols > 0 ? int64_t(x.size()) / cols : 0;
  std::vector<double> m(size_t(rows * cols));
  if (trans) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) m[size_t(j * rows + i)] = x[size_t(i * cols + j)];
  } else {
    for (size_t i = 0; i < m.size(); ++i) m[i] = x[i];
  }
  return m;
}

constexpr int64_t kChunk = 64;  // rows of dst per work item

// dst[out, :] += v · src[in, :] for every element v = S(r0 + i, c0 + j) of the sparse operand's data
// [blocks, B, B], with (out, in) = (c0 + j, r0 + i) when `transposed`, else (r0 + i, c0 + j); dst and src
// are row-major with rows of `len`. Work items own kChunk rows of dst, each summed in block, i, j order.
void accumulate_rows(const HostTopology& t, int64_t B, std::span<const float> data, bool transposed,
                     const std::vector<double>& src, int64_t len, int64_t dst_rows, std::vector<double>& dst) {
  detail::parallel_for((dst_rows + kChunk - 1) / kChunk, 0, [&](int64_t item) {
    const int64_t o0 = item * kChunk, o1 = std::min(dst_rows, o0 + kChunk);
    for (int64_t blk = 0; blk < t.blocks(); ++blk) {
      const int64_t r0 = int64_t(t.row_indices[size_t(blk)]) * B, c0 = int64_t(t.column_indices[size_t(blk)]) * B;
      const int64_t first = transposed ? c0 : r0;  // the block's rows of dst: first … first + B − 1
      if (first >= o1 || first + B <= o0) continue;
      for (int64_t i = 0; i < B; ++i)
        for (int64_t j = 0; j < B; ++j) {
          const int64_t out = transposed ? c0 + j : r0 + i, in = transposed ? r0 + i : c0 + j;
          if (out < o0 || out >= o1) continue;
          const double v = data[size_t((blk * B + i) * B + j)];
          double* d = &dst[size_t(out * len)];
          const double* x = &src[size_t(in * len)];
          for (int64_t h = 0; h < len; ++h) d[h] += v * x[h];
        }
    }
  });
}

}  // namespace

// Every output element is summed by one work item in the same order as a plain loop over blocks, i, j
// (SDD: over k), so the result does not depend on the thread count; the items run on every core (the GPU
// tests' references dominated their run time when they ran on one).
std::vector<double> product(const KernelSpec& k, const HostTopology& t, int64_t capacity,
                            std::span<const float> a, std::span<const float> b) {
  const ProductShapes s = product_shapes(k, t, capacity);
  const int64_t B = k.block, H = k.hidden, n = t.blocks();
  std::vector<double> c(size_t(k.op == Op::SDD ? n * B * B : s.c_rows * s.c_cols), 0.0);
  if (k.op == Op::SDD) {
    // C_blk[i, j] = op(A)[r0 + i, :] · op(B)[:, c0 + j], both rows of contiguous matrices.
    const std::vector<double> A = op_matrix(a, s.a_cols, k.trans_a), Bt = op_matrix(b, s.b_cols, !k.trans_b);
    detail::parallel_for(n, 0, [&](int64_t blk) {
      const int64_t r0 = int64_t(t.row_indices[size_t(blk)]) * B, c0 = int64_t(t.column_indices[size_t(blk)]) * B;
      for (int64_t i = 0; i < B; ++i) {
        const double* ar = &A[size_t((r0 + i) * H)];
        int64_t j = 0;
        for (; j + 4 <= B; j += 4) {  // four sums side by side, each in k order
          const double* br = &Bt[size_t((c0 + j) * H)];
          double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (int64_t kk = 0; kk < H; ++kk) {
            const double x = ar[kk];
            s0 += x * br[kk];
            s1 += x * br[H + kk];
            s2 += x * br[2 * H + kk];
            s3 += x * br[3 * H + kk];
          }
          double* cr = &c[size_t((blk * B + i) * B + j)];
          cr[0] = s0, cr[1] = s1, cr[2] = s2, cr[3] = s3;
        }
        for (; j < B; ++j) {
          const double* br = &Bt[size_t((c0 + j) * H)];
          double sum = 0;
          for (int64_t kk = 0; kk < H; ++kk) sum += ar[kk] * br[kk];
          c[size_t((blk * B + i) * B + j)] = sum;
        }
      }
    });
  } else if (k.op == Op::DSD) {
    // S: C[r0 + i, :] += v · op(B)[c0 + j, :];  Sᵀ: C[c0 + j, :] += v · op(B)[r0 + i, :].
    accumulate_rows(t, B, a, k.trans_a, op_matrix(b, s.b_cols, k.trans_b), s.c_cols, s.c_rows, c);
  } else {
    // S: C[:, c0 + j] += op(A)[:, r0 + i] · v;  Sᵀ: C[:, r0 + i] += op(A)[:, c0 + j] · v: the same on rows of
    // Cᵀ from rows of op(A)ᵀ, then transposed.
    const int64_t rows = s.c_rows;
    std::vector<double> ct(c.size(), 0.0);
    accumulate_rows(t, B, b, !k.trans_b, op_matrix(a, s.a_cols, !k.trans_a), rows, s.c_cols, ct);
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t o = 0; o < s.c_cols; ++o) c[size_t(m * s.c_cols + o)] = ct[size_t(o * rows + m)];
  }
  return c;
}

uint16_t to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float from_bf16(uint16_t h) { return std::bit_cast<float>(uint32_t{h} << 16); }

uint16_t to_fp16(float f) { return std::bit_cast<uint16_t>(static_cast<_Float16>(f)); }

float from_fp16(uint16_t h) { return static_cast<float>(std::bit_cast<_Float16>(h)); }

double relative_error(std::span<const double> ref, std::span<const double> out) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace dmoe::reference

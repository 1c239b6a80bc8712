// dmoe/kernels/product.cuh — SDD, DSD and DDS over the MoE block-sparse topology.
//
// A reference-quality SIMT kernel: each CTA computes one TM×TN output tile as a sum of segments (pairs of
// operand panels of the reduction), staging TK-deep slices through shared memory in fp32. It exists to be
// correct for every operand layout; the tensor-core kernels replace it on the fast path. Loops stay
// rolled: NVVM time on unrolled bodies dominated the JIT compile time (bench/NOTES.md).
#pragma once
#include "dmoe/args.cuh"
#include "dmoe/common/activation.cuh"
#include "dmoe/common/types.cuh"
#include "dmoe/ptx/ptx.cuh"

namespace dmoe {

// A panel of an operand, addressed as (outer, k): outer is the output row (for A) or column (for B),
// k runs along the reduction. KContig says which of the two is contiguous in memory.
template <class Elem, bool KContig>
struct Panel {
  const Elem* p;
  int64_t ld;
  __device__ __forceinline__ float at(int outer, int k) const {
    const int64_t off = KContig ? int64_t(outer) * ld + k : int64_t(k) * ld + outer;
    return Elem::to_float(ptx::ld_nc_u16(p + off));
  }
};

template <class Elem, int TM, int TN, int TK, int THREADS>
struct TileAccumulator {
  static constexpr int TX = TN / 4;           // threads along n, each owning 4 columns
  static constexpr int TY = THREADS / TX;     // threads along m
  static constexpr int PM = TM / TY;          // rows per thread, strided by TY
  static constexpr int PN = 4;
  static_assert(TN % 4 == 0 && THREADS % TX == 0 && TM % TY == 0 && PM >= 1, "tile does not fit the CTA");

  float acc[PM][PN];
  float* a_s;  // [TK][TM + 1]
  float* b_s;  // [TK][TN + 1]

  __device__ explicit TileAccumulator(float* smem) : a_s(smem), b_s(smem + TK * (TM + 1)) {
#pragma unroll
    for (int i = 0; i < PM; ++i)
#pragma unroll
      for (int j = 0; j < PN; ++j) acc[i][j] = 0.f;
  }

  // Loads the TK-slice [k0, k0+TK) of a TO×TK panel into s[k][outer], the contiguous memory dimension
  // running across consecutive threads so global loads coalesce.
  template <int TO, bool KContig>
  __device__ __forceinline__ static void stage(float* s, const Panel<Elem, KContig>& panel, int k0) {
#pragma unroll 1
    for (int idx = threadIdx.x; idx < TO * TK; idx += THREADS) {
      const int outer = KContig ? idx / TK : idx % TO;
      const int k = KContig ? idx % TK : idx / TO;
      s[k * (TO + 1) + outer] = panel.at(outer, k0 + k);
    }
  }

  // acc += A_panel[TM, klen] · B_panel[klen, TN]
  template <bool AK, bool BK>
  __device__ void add(const Panel<Elem, AK>& a, const Panel<Elem, BK>& b, int klen) {
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    for (int k0 = 0; k0 < klen; k0 += TK) {
      stage<TM>(a_s, a, k0);
      stage<TN>(b_s, b, k0);
      __syncthreads();
#pragma unroll 1
      for (int k = 0; k < TK; ++k) {
        float av[PM], bv[PN];
#pragma unroll
        for (int i = 0; i < PM; ++i) av[i] = a_s[k * (TM + 1) + ty + i * TY];
#pragma unroll
        for (int j = 0; j < PN; ++j) bv[j] = b_s[k * (TN + 1) + tx * PN + j];
#pragma unroll
        for (int i = 0; i < PM; ++i)
#pragma unroll
          for (int j = 0; j < PN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
  }

  // Writes the tile to c[row * ldc + col]: every element of the tile, zero segments included. With an
  // epilogue, `aux` (same layout as c) receives the pre-activation or supplies it for the gradient.
  template <int Epi = kEpiNone>
  __device__ void store(Elem* c, int64_t ldc, Elem* aux = nullptr) const {
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
#pragma unroll
    for (int i = 0; i < PM; ++i)
#pragma unroll
      for (int j = 0; j < PN; ++j) {
        const int64_t off = int64_t(ty + i * TY) * ldc + tx * PN + j;
        float v = acc[i][j];
        if constexpr (epilogue_is_gradient(Epi)) {
          v = apply_grad<Epi>(v, Elem::to_float(ptx::ld_nc_u16(aux + off)));
        } else if constexpr (Epi != kEpiNone) {
          if (aux) ptx::st_u16(aux + off, Elem::from_float(v));
          v = apply_act<Epi>(v);
        }
        ptx::st_u16(c + off, Elem::from_float(v));
      }
  }
};

// Kind: kSDD / kDSD / kDDS. TransA / TransB as in the KernelSpec (for DSD TransA transposes S, for DDS
// TransB does). B: block size; H, F, E: hidden, ffn, experts.
template <class Elem, int Kind, bool TransA, bool TransB, int B, int H, int F, int E, int TM, int TN, int TK,
          int THREADS, int Epi = kEpiNone>
__device__ __forceinline__ void block_sparse_product(const ProductArgs& args) {
  static_assert(B % TM == 0 && B % TN == 0 && H % TM == 0 && H % TN == 0 && H % TK == 0 && B % TK == 0,
                "tile must divide the block and hidden sizes");
  constexpr int64_t FE = int64_t(E) * F;
  constexpr int64_t BB = int64_t(B) * B;
  const int64_t ldt = int64_t(args.max_block_rows) * B;  // leading dim of T_pad-contiguous operands
  const int block_rows = ptx::ld_nc_s32(args.topo.block_rows);
  const Elem* A = static_cast<const Elem*>(args.a);
  const Elem* Bm = static_cast<const Elem*>(args.b);
  Elem* C = static_cast<Elem*>(args.c);
  const Topology& t = args.topo;
  const int64_t id = blockIdx.x;

  extern __shared__ float smem[];
  TileAccumulator<Elem, TM, TN, TK, THREADS> tile(smem);

  if constexpr (Kind == kSDD) {
    constexpr int SM = B / TM, SN = B / TN;
    const int64_t blk = id / (SM * SN);
    const int sm = int(id % (SM * SN)) / SN, sn = int(id % SN);
    if (blk >= ptx::ld_nc_s32(t.offsets + block_rows)) return;
    const int64_t row0 = int64_t(ptx::ld_nc_s32(t.row_indices + blk)) * B + sm * TM;
    const int64_t col0 = int64_t(ptx::ld_nc_s32(t.column_indices + blk)) * B + sn * TN;
    // op(A)(row, k): [T_pad, H] or [H, T_pad]. op(B)(k, col): [H, FE] or [FE, H].
    const Panel<Elem, !TransA> a{TransA ? A + row0 : A + row0 * H, TransA ? ldt : H};
    const Panel<Elem, TransB> b{TransB ? Bm + col0 * H : Bm + col0, TransB ? H : FE};
    tile.add(a, b, H);
    const int64_t at = blk * BB + int64_t(sm) * TM * B + sn * TN;
    tile.template store<Epi>(C + at, B, args.aux ? static_cast<Elem*>(args.aux) + at : nullptr);
  } else if constexpr (Kind == kDSD) {
    constexpr int SM = B / TM, SN = H / TN;
    const int64_t outer = id / (SM * SN);  // block row of S, or block column for Sᵀ
    const int sm = int(id % (SM * SN)) / SN, sn = int(id % SN);
    if (!TransA && outer >= block_rows) return;
    const int first = ptx::ld_nc_s32((TransA ? t.offsets_t : t.offsets) + outer);
    const int last = ptx::ld_nc_s32((TransA ? t.offsets_t : t.offsets) + outer + 1);
    for (int j = first; j < last; ++j) {
      if constexpr (!TransA) {
        // op(S) = S: the block's rows are the output rows, its column c selects rows c·B… of op(B).
        const int64_t c = ptx::ld_nc_s32(t.column_indices + j);
        const Panel<Elem, true> s{static_cast<const Elem*>(args.a) + j * BB + int64_t(sm) * TM * B, B};
        const Panel<Elem, TransB> b{TransB ? Bm + int64_t(sn) * TN * FE + c * B : Bm + c * B * H + sn * TN,
                                    TransB ? FE : H};
        tile.add(s, b, B);
      } else {
        // op(S) = Sᵀ: walk the block column through the transpose metadata; r selects op(B)'s rows.
        const int64_t blk = ptx::ld_nc_s32(t.block_offsets_t + j);
        const int64_t r = ptx::ld_nc_s32(t.column_indices_t + j);
        const Panel<Elem, false> s{static_cast<const Elem*>(args.a) + blk * BB + sm * TM, B};
        const Panel<Elem, TransB> b{TransB ? Bm + int64_t(sn) * TN * ldt + r * B : Bm + r * B * H + sn * TN,
                                    TransB ? ldt : H};
        tile.add(s, b, B);
      }
    }
    tile.store(C + (outer * B + int64_t(sm) * TM) * H + sn * TN, H);
  } else {
    constexpr int SN = B / TN;
    const int64_t per_m = (TransB ? int64_t(args.max_block_rows) : FE / B) * SN;
    const int mt = int(id / per_m);
    const int64_t outer = (id % per_m) / SN;  // block column of S, or block row for Sᵀ
    const int sn = int(id % SN);
    if (TransB && outer >= block_rows) return;
    const int first = ptx::ld_nc_s32((TransB ? t.offsets : t.offsets_t) + outer);
    const int last = ptx::ld_nc_s32((TransB ? t.offsets : t.offsets_t) + outer + 1);
    for (int j = first; j < last; ++j) {
      if constexpr (!TransB) {
        // op(S) = S: block column `outer`; the block row r selects op(A)'s columns r·B… (in T_pad).
        const int64_t blk = ptx::ld_nc_s32(t.block_offsets_t + j);
        const int64_t r = ptx::ld_nc_s32(t.column_indices_t + j);
        const Panel<Elem, !TransA> a{TransA ? A + r * B * H + mt * TM : A + int64_t(mt) * TM * ldt + r * B,
                                     TransA ? H : ldt};
        const Panel<Elem, false> s{static_cast<const Elem*>(args.b) + blk * BB + sn * TN, B};
        tile.add(a, s, B);
      } else {
        // op(S) = Sᵀ: block row `outer`; the block column c selects op(A)'s columns c·B… (in E·F).
        const int64_t c = ptx::ld_nc_s32(t.column_indices + j);
        const Panel<Elem, !TransA> a{TransA ? A + c * B * H + mt * TM : A + int64_t(mt) * TM * FE + c * B,
                                     TransA ? H : FE};
        const Panel<Elem, true> s{static_cast<const Elem*>(args.b) + j * BB + int64_t(sn) * TN * B, B};
        tile.add(a, s, B);
      }
    }
    const int64_t ldc = TransB ? ldt : FE;
    tile.store(C + int64_t(mt) * TM * ldc + outer * B + sn * TN, ldc);
  }
}

}  // namespace dmoe

// dmoe/kernels/sm80_product.cuh — SDD, DSD and DDS on Ampere-class tensor cores (mma.sync; sm_80, sm_86,
// sm_89, and sm_90a, which runs it too).
//
// One CTA per BM×BN output tile, with the SIMT kernel's task decomposition and topology walk
// (product.cuh, product_ctas): the reduction is a list of segments — the whole of H for SDD, one B×B
// block (B/BK steps) per topology entry for DSD and DDS — that a multi-stage cp.async ring streams
// through shared memory, BK elements of the reduction per stage. Warps sit 2 along M and WARPS/2 along
// N, each owning a (BM/2)×(BN/(WARPS/2)) warp tile of m16n8k16 fp32 accumulators (64×32 for 128×128
// with 8 warps); fragments come from shared memory with ldmatrix (.trans for MN-major operands). The
// epilogue converts to the element type, stages the tile in shared memory and writes 16-byte rows.
//
// Operand majorness follows the transposes, as in the Hopper kernel: op(A) is K-major in memory iff
// !TransA, op(B) iff TransB, for every op. Shared memory keeps each operand in its global majorness:
// K-major tiles as BM (BN) rows of BK elements, MN-major ones as BK rows of BM (BN) elements, 16-byte
// chunks XOR-swizzled so that both the cp.async writes and every ldmatrix phase are free of bank
// conflicts.
#pragma once
#include "dmoe/args.cuh"
#include "dmoe/common/activation.cuh"
#include "dmoe/common/types.cuh"
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/ptx/sm80.cuh"

namespace dmoe::sm80 {

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of CPR chunks per row. Rows of 128 bytes
// or more: the chunk index is XORed with row % 8, so the same chunk of 8 consecutive rows lands in 8
// different bank groups. Rows of 64 bytes: two rows share 128 bytes, the chunk is XORed with
// (row / 2) % 4. The XOR term has a period of 8 rows.
template <int CPR>
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
  static_assert(CPR == 4 || CPR % 8 == 0, "rows of 64 bytes or a multiple of 128");
  if constexpr (CPR == 4) return uint32_t(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
  else return uint32_t(row * CPR * 16 + ((chunk ^ (row & 7)) << 4));
}

// One operand's tile of a stage: ROWS (of M or N) × BK, K-major (ROWS rows of BK elements) or MN-major
// (BK rows of ROWS elements), and this thread's share of the cp.async copies that fill it.
template <class Elem, int ROWS, int BK, bool KMajor, int THREADS>
struct OperandTile {
  static constexpr int kRows = KMajor ? ROWS : BK;        // rows in shared memory
  static constexpr int kCPR = (KMajor ? BK : ROWS) / 8;   // 16-byte chunks per row
  static constexpr int kBytes = kRows * kCPR * 16;
  static constexpr int kRowStep = THREADS / kCPR;         // rows between one thread's copies
  static constexpr int kCopies = kRows / kRowStep;        // copies per thread per stage
  static_assert(THREADS % kCPR == 0 && kRows % kRowStep == 0 && kRowStep % 8 == 0,
                "the copies must tile the stage with the swizzle's period");

  int64_t gofs;    // element offset of this thread's first chunk in a slice
  int64_t gstep;   // element offset between its copies (kRowStep rows)
  uint32_t sofs;   // byte offset of its first chunk in the stage

  __device__ explicit OperandTile(int64_t ld) {
    const int row = threadIdx.x / kCPR, chunk = threadIdx.x % kCPR;
    gofs = int64_t(row) * ld + chunk * 8;
    gstep = int64_t(kRowStep) * ld;
    sofs = swizzle<kCPR>(row, chunk);
  }

  // Copies the slice whose element (0, 0) is at `src` into the stage at shared address `dst`.
  __device__ __forceinline__ void load(uint32_t dst, const Elem* src) const {
    src += gofs;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) ptx::cp_async_16(dst + sofs + i * (kRowStep * kCPR * 16), src + i * gstep);
  }
};

// The output tile this CTA computes and the segments of its reduction. decode() returns false when the
// tile lies past the true T_pad (the grid is sized from the host's upper bound).
template <class Elem, int Kind, bool TransA, bool TransB, int B, int H, int F, int E, int BM, int BN, int BK>
struct Task {
  static constexpr bool kAK = !TransA;  // op(A) K-major in memory
  static constexpr bool kBKm = TransB;  // op(B) K-major in memory
  static constexpr int64_t FE = int64_t(E) * F;
  static constexpr int64_t BB = int64_t(B) * B;
  static constexpr int kSteps = (Kind == kSDD ? H : B) / BK;  // BK steps per segment
  static_assert((Kind == kSDD ? H : B) % BK == 0, "BK must divide the reduction of a segment");

  const Elem* A;
  const Elem* Bm;
  Topology topo;
  int64_t ldt;              // leading dimension of the T_pad-contiguous operands
  int64_t lda, ldb, ldc;
  int first, segments;      // topology entries of the reduction (SDD: one segment, the whole of H)
  int sm, sn, mt;           // tile indices within the block / hidden
  int64_t outer;            // SDD: block; DSD: block row (S) or column (Sᵀ); DDS: block column (S) or row (Sᵀ)
  int64_t row0, col0;       // SDD: first row of op(A) and column of op(B)
  Elem* C;                  // output tile's element (0, 0)

  __device__ bool decode(const ProductArgs& args) {
    topo = args.topo;
    A = static_cast<const Elem*>(args.a);
    Bm = static_cast<const Elem*>(args.b);
    ldt = int64_t(args.max_block_rows) * B;
    const int block_rows = ptx::ld_nc_s32(topo.block_rows);
    const int64_t id = blockIdx.x;
    Elem* out = static_cast<Elem*>(args.c);
    if constexpr (Kind == kSDD) {
      constexpr int SM = B / BM, SN = B / BN;
      outer = id / (SM * SN);
      sm = int(id % (SM * SN)) / SN, sn = int(id % SN);
      if (outer >= ptx::ld_nc_s32(topo.offsets + block_rows)) return false;
      row0 = int64_t(ptx::ld_nc_s32(topo.row_indices + outer)) * B + sm * BM;
      col0 = int64_t(ptx::ld_nc_s32(topo.column_indices + outer)) * B + sn * BN;
      lda = kAK ? H : ldt;
      ldb = kBKm ? H : FE;
      ldc = B;
      first = 0, segments = 1;
      C = out + outer * BB + int64_t(sm) * BM * B + sn * BN;
    } else if constexpr (Kind == kDSD) {
      constexpr int SM = B / BM, SN = H / BN;
      outer = id / (SM * SN);
      sm = int(id % (SM * SN)) / SN, sn = int(id % SN);
      if (!TransA && outer >= block_rows) return false;
      const int* offs = TransA ? topo.offsets_t : topo.offsets;
      first = ptx::ld_nc_s32(offs + outer);
      segments = ptx::ld_nc_s32(offs + outer + 1) - first;
      lda = B;
      ldb = kBKm ? (TransA ? ldt : FE) : H;
      ldc = H;
      C = out + (outer * B + int64_t(sm) * BM) * H + sn * BN;
    } else {
      constexpr int SN = B / BN;
      const int64_t per_m = (TransB ? int64_t(args.max_block_rows) : FE / B) * SN;
      mt = int(id / per_m);
      outer = (id % per_m) / SN;
      sn = int(id % SN);
      if (TransB && outer >= block_rows) return false;
      const int* offs = TransB ? topo.offsets : topo.offsets_t;
      first = ptx::ld_nc_s32(offs + outer);
      segments = ptx::ld_nc_s32(offs + outer + 1) - first;
      lda = kAK ? (TransB ? FE : ldt) : H;
      ldb = B;
      ldc = TransB ? ldt : FE;
      C = out + int64_t(mt) * BM * ldc + outer * B + sn * BN;
    }
    return true;
  }

  __device__ int steps() const { return segments * kSteps; }

  // The topology entries of segment s (one or two indices; none for SDD). Fetched a segment ahead of
  // use, so the loads' latency hides behind the current segment's steps.
  struct Ref {
    int j, x, y;
  };
  __device__ Ref fetch(int s) const {
    const int j = first + s;
    if constexpr (Kind == kSDD) return {0, 0, 0};
    else if constexpr ((Kind == kDSD && !TransA) || (Kind == kDDS && TransB))
      return {j, ptx::ld_nc_s32(topo.column_indices + j), 0};  // block j, column c
    else  // the j-th block in column order: position blk in data, block row r
      return {j, ptx::ld_nc_s32(topo.block_offsets_t + j), ptx::ld_nc_s32(topo.column_indices_t + j)};
  }

  // Element (0, 0) of a segment's first slice for op(A) and op(B): (m, k) of op(A) is at a + m·lda + k
  // (K-major) or a + k·lda + m, likewise (n, k) of op(B).
  __device__ void slices(const Ref& e, const Elem*& a, const Elem*& b) const {
    if constexpr (Kind == kSDD) {
      a = kAK ? A + row0 * H : A + row0;
      b = kBKm ? Bm + col0 * H : Bm + col0;
    } else if constexpr (Kind == kDSD) {
      if constexpr (!TransA) {
        // op(S) = S: block j of row `outer` (K-major); its column c selects op(B)'s rows c·B…
        const int64_t c = e.x;
        a = A + e.j * BB + int64_t(sm) * BM * B;
        b = kBKm ? Bm + int64_t(sn) * BN * FE + c * B : Bm + c * B * H + sn * BN;
      } else {
        // op(S) = Sᵀ: block blk, the j-th of column `outer` (MN-major); its block row r selects op(B)'s rows.
        const int64_t blk = e.x, r = e.y;
        a = A + blk * BB + sm * BM;
        b = kBKm ? Bm + int64_t(sn) * BN * ldt + r * B : Bm + r * B * H + sn * BN;
      }
    } else {
      if constexpr (!TransB) {
        // op(S) = S: block blk, the j-th of column `outer` (MN-major); its block row r selects op(A)'s columns.
        const int64_t blk = e.x, r = e.y;
        a = kAK ? A + int64_t(mt) * BM * ldt + r * B : A + r * B * H + mt * BM;
        b = Bm + blk * BB + sn * BN;
      } else {
        // op(S) = Sᵀ: block j of row `outer` (K-major); its column c selects op(A)'s columns c·B…
        const int64_t c = e.x;
        a = kAK ? A + int64_t(mt) * BM * FE + c * B : A + c * B * H + mt * BM;
        b = Bm + e.j * BB + int64_t(sn) * BN * B;
      }
    }
  }
};

// The warp's share of the tile: MI×NI m16n8 accumulators, and the ldmatrix addressing of its fragments.
template <class Elem, int BM, int BN, int BK, int WARPS, bool AK, bool BKm>
struct WarpTile {
  static constexpr int WM = 2, WN = WARPS / 2;
  static constexpr int TM = BM / WM, TN = BN / WN;  // warp tile
  static constexpr int MI = TM / 16, NI = TN / 8;
  static_assert(TM % 16 == 0 && TN % 16 == 0, "warp tiles are made of 16×16 ldmatrix.x4 pieces");
  static constexpr int kACPR = (AK ? BK : BM) / 8, kBCPR = (BKm ? BK : BN) / 8;

  float acc[MI][NI][4];
  int wm, wn, lane;

  __device__ WarpTile() {
    const int warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    wm = warp % WM, wn = warp / WM;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  // Fragment of rows i·16… of op(A), k16 step kk. K-major: lane l addresses row l % 16, k-half l / 16;
  // MN-major (transposed load): k row (l % 8) + 8·(l / 16), m-half (l / 8) % 2.
  __device__ __forceinline__ void load_a(unsigned (&r)[4], uint32_t stage, int i, int kk) const {
    const int m = wm * TM + i * 16;
    if constexpr (AK) {
      ptx::ldmatrix_x4(r, stage + swizzle<kACPR>(m + (lane & 15), kk * 2 + (lane >> 4)));
    } else {
      ptx::ldmatrix_x4_trans(r, stage + swizzle<kACPR>(kk * 16 + (lane & 7) + ((lane >> 4) << 3),
                                                        m / 8 + ((lane >> 3) & 1)));
    }
  }

  // Fragments of columns p·16… (two n8 pieces) of op(B), k16 step kk: r = {n0–7 k0–7, n0–7 k8–15,
  // n8–15 k0–7, n8–15 k8–15}.
  __device__ __forceinline__ void load_b(unsigned (&r)[4], uint32_t stage, int p, int kk) const {
    const int n = wn * TN + p * 16;
    if constexpr (BKm) {
      ptx::ldmatrix_x4(r, stage + swizzle<kBCPR>(n + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
    } else {
      ptx::ldmatrix_x4_trans(r, stage + swizzle<kBCPR>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                                        n / 8 + (lane >> 4)));
    }
  }

  // acc += the stage's BM×BK slice of op(A) times its BK×BN slice of op(B).
  __device__ __forceinline__ void mma(uint32_t a_stage, uint32_t b_stage) {
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      unsigned a[MI][4], b[NI / 2][4];
#pragma unroll
      for (int i = 0; i < MI; ++i) load_a(a[i], a_stage, i, kk);
#pragma unroll
      for (int p = 0; p < NI / 2; ++p) load_b(b[p], b_stage, p, kk);
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          const unsigned b0 = b[j / 2][(j % 2) * 2], b1 = b[j / 2][(j % 2) * 2 + 1];
          if constexpr (Elem::kIsBf16) ptx::mma_m16n8k16_bf16(acc[i][j], a[i], b0, b1);
          else ptx::mma_m16n8k16_f16(acc[i][j], a[i], b0, b1);
        }
    }
  }

  // Writes the accumulators, converted, into a BM×BN tile in shared memory (rows of BN elements,
  // swizzled): lane (g, t) holds rows g and g + 8, columns 2t and 2t + 1 of each m16n8 piece. With an
  // epilogue, in fp32 before the rounding: Mode 1 applies act, Mode 2 multiplies by act'(pre), pre read
  // from global memory at the tile's own positions (row stride ldc).
  template <int Epi = kEpiNone, int Mode = 0>
  __device__ __forceinline__ void stage_out(uint32_t tile, const Elem* pre = nullptr, int64_t ldc = 0) const {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = wm * TM + i * 16 + g + 8 * h, col = wn * TN + j * 8;
          float x = acc[i][j][2 * h], y = acc[i][j][2 * h + 1];
          if constexpr (Mode == 1) {
            x = apply_act<Epi>(x);
            y = apply_act<Epi>(y);
          } else if constexpr (Mode == 2) {
            const Elem* p = pre + row * ldc + col + 2 * t;
            x = apply_grad<Epi>(x, Elem::to_float(ptx::ld_nc_u16(p)));
            y = apply_grad<Epi>(y, Elem::to_float(ptx::ld_nc_u16(p + 1)));
          }
          ptx::st_shared_u32(tile + swizzle<BN / 8>(row, col / 8) + t * 4, Elem::pack2(x, y));
        }
  }
};

template <class Elem, int Kind, bool TransA, bool TransB, int B, int H, int F, int E, int BM, int BN, int BK,
          int WARPS, int STAGES, int Epi = kEpiNone>
__device__ __forceinline__ void product(const ProductArgs& args) {
  static_assert(Epi == kEpiNone || Kind == kSDD, "epilogues apply to SDD only");
  constexpr int THREADS = 32 * WARPS;
  static_assert(STAGES >= 2, "a ring of at least two stages");
  using T = Task<Elem, Kind, TransA, TransB, B, H, F, E, BM, BN, BK>;
  using ATile = OperandTile<Elem, BM, BK, T::kAK, THREADS>;
  using BTile = OperandTile<Elem, BN, BK, T::kBKm, THREADS>;
  constexpr uint32_t kStageBytes = ATile::kBytes + BTile::kBytes;
  static_assert(sm80_smem_bytes(BM, BN, BK, STAGES) >= int(STAGES * kStageBytes) &&
                    sm80_smem_bytes(BM, BN, BK, STAGES) >= BM * BN * 2,
                "sm80_smem_bytes must cover the ring and the output tile");

  T task;
  if (!task.decode(args)) return;

  extern __shared__ __attribute__((aligned(128))) char smem[];
  const uint32_t smem_base = ptx::smem_addr(smem);
  const ATile a_tile(task.lda);
  const BTile b_tile(task.ldb);
  // Advancing one BK step within a segment: along the contiguous dimension (K-major) or BK rows.
  const int64_t a_kstep = T::kAK ? BK : BK * task.lda, b_kstep = T::kBKm ? BK : BK * task.ldb;

  // The load cursor: segment, step within it, the segment's first slices, the next segment's entries.
  int seg = 0, q = 0;
  const Elem *a_src = nullptr, *b_src = nullptr;
  const int nk = task.steps();
  typename T::Ref next{};
  if (nk > 0) {
    task.slices(task.fetch(0), a_src, b_src);
    if (task.segments > 1) next = task.fetch(1);
  }
  auto load_next = [&](int stage) {
    const uint32_t dst = smem_base + stage * kStageBytes;
    a_tile.load(dst, a_src + q * a_kstep);
    b_tile.load(dst + ATile::kBytes, b_src + q * b_kstep);
    if (++q == T::kSteps) {
      q = 0;
      if (++seg < task.segments) {
        task.slices(next, a_src, b_src);
        if (seg + 1 < task.segments) next = task.fetch(seg + 1);
      }
    }
  };

  // Prologue: STAGES − 1 steps in flight (one commit group per step, empty past the end).
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nk) load_next(s);
    ptx::cp_async_commit();
  }

  WarpTile<Elem, BM, BN, BK, WARPS, T::kAK, T::kBKm> warp;
  int read = 0, write = STAGES - 1;
#pragma unroll 1
  for (int ks = 0; ks < nk; ++ks) {
    ptx::cp_async_wait<STAGES - 2>();  // this thread's copies of step ks have landed
    __syncthreads();                   // everyone's have, and everyone is done with step ks − 1's stage
    if (ks + STAGES - 1 < nk) load_next(write);
    ptx::cp_async_commit();
    const uint32_t stage = smem_base + read * kStageBytes;
    warp.mma(stage, stage + ATile::kBytes);
    if (++read == STAGES) read = 0;
    if (++write == STAGES) write = 0;
  }

  // Epilogue: the ring is free once every warp is past its last mma; the tile goes through it.
  constexpr int CPR = BN / 8;
  static_assert(BM * CPR % THREADS == 0, "the output tile's chunks are spread evenly");
  // The staged tile → global memory in 16-byte rows, at `dst` (C, or the same place in aux).
  auto write_out = [&](Elem* dst) {
#pragma unroll
    for (int it = 0; it < BM * CPR / THREADS; ++it) {
      const int i = threadIdx.x + it * THREADS, row = i / CPR, chunk = i % CPR;
      unsigned v[4];
      ptx::ld_shared_v4_u32(smem_base + swizzle<CPR>(row, chunk), v);
      ptx::st_v4_u32(dst + row * task.ldc + chunk * 8, v);
    }
  };
  // The epilogue operand sits where the tile sits in C (same layout).
  Elem* const aux = args.aux ? static_cast<Elem*>(args.aux) + (task.C - static_cast<Elem*>(args.c)) : nullptr;
  ptx::cp_async_wait<0>();
  __syncthreads();
  if constexpr (epilogue_is_gradient(Epi)) {
    warp.template stage_out<Epi, 2>(smem_base, aux, task.ldc);
  } else if constexpr (Epi != kEpiNone) {
    if (aux) {  // keep the pre-activation for the backward pass
      warp.stage_out(smem_base);
      __syncthreads();
      write_out(aux);
      __syncthreads();
    }
    warp.template stage_out<Epi, 1>(smem_base);
  } else {
    warp.stage_out(smem_base);
  }
  __syncthreads();
  write_out(task.C);
}

}  // namespace dmoe::sm80

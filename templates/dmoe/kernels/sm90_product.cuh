// dmoe/kernels/sm90_product.cuh — SDD, DSD and DDS on Hopper tensor cores (sm_90a).
//
// A persistent, warp-specialized kernel: warpgroup 0 is the producer (one thread issues TMA loads into a
// ring of shared-memory stages, each guarded by a "full" and an "empty" mbarrier), warpgroups 1 and 2
// are consumers (wgmma from shared memory, fp32 accumulators in registers). Every product is a grouped
// GEMM over the experts' B-aligned segments; the tile scheduler walks the topology on the device, so the
// host never needs T_pad. Tiles are taken round-robin over the grid (one CTA per SM); with CLUSTER = 2
// a cluster takes two adjacent column tiles at a time and its CTA 0 multicasts their common A tile.
//
// Operand majorness follows the transposes: A is K-major in memory iff !TransA, B iff TransB (for every
// op). K-major operands arrive as one {64, rows} box per stage, MN-major ones as {64, 64} chunks; both
// with 128-byte swizzle, which is what the wgmma descriptors below describe.
//
// MoE topology contract (dmoe-semantics.md): block row r holds its expert's F/B consecutive block
// columns at data[offsets[r] …]; SDD tiles wider than B rely on it.
#pragma once
#include "dmoe/args.cuh"
#include "dmoe/common/activation.cuh"
#include "dmoe/common/types.cuh"
#include "dmoe/ptx/ptx.cuh"
#include "dmoe/ptx/sm80.cuh"
#include "dmoe/ptx/sm90.cuh"
#include "dmoe/ptx/wgmma.cuh"

namespace dmoe::sm90 {

constexpr int kBK = 64;                  // reduction depth of a stage: one 128-byte swizzle row
constexpr uint32_t kChunk = 64 * 64 * 2; // bytes of one MN-major {64, 64} box
constexpr int kConsumerWarps = 8;

template <class Elem, int Kind, bool TransA, bool TransB, int B, int H, int F, int E, int BM, int BN, int Group,
          int Cluster = 1>
struct Tiles {
  static constexpr bool kAK = !TransA;  // A K-major in memory and in shared memory
  static constexpr bool kBKm = TransB;  // B K-major
  static constexpr int kStepsPerBlock = B / kBK;
  static constexpr int64_t FE = int64_t(E) * F;
  static constexpr int kBlockCols = int(FE / B);
  static constexpr int MT = Kind == kDDS ? H / BM : B / BM;  // tiles along M per outer index
  // DDS with S (not Sᵀ) may take tiles wider than a block: kSpan adjacent block columns of one expert,
  // one outer index. Their blocks sit side by side in every block row (the MoE topology contract), so
  // block blk's neighbour d columns over is blk + d.
  static constexpr int kSpan = Kind == kDDS && BN > B ? BN / B : 1;
  static_assert(kSpan == 1 || (!TransB && (F / B) % kSpan == 0), "a wide DDS tile spans one expert's block columns of S");
  static constexpr int NT = Kind == kSDD ? F / BN : Kind == kDSD ? H / BN : kSpan > 1 ? 1 : B / BN;
  // DSD Sᵀ and DDS S reduce down a block column (transpose metadata); the others along a block row.
  static constexpr bool kByColumn = Kind == kDSD ? TransA : Kind == kDDS ? !TransB : false;
  // A cluster of Cluster CTAs takes Cluster adjacent column tiles of one outer index and m: the same A
  // tiles and the same reduction, so CTA 0 loads A once for all of them (TMA multicast).
  static_assert(Cluster == 1 || Cluster == 2, "clusters of 1 or 2 CTAs");
  static_assert(NT % Cluster == 0, "a cluster's column tiles lie within one outer index");
  static constexpr int NTC = NT / Cluster;  // cluster tiles along N per outer index and m

  int outer;        // block row (SDD, DSD S, DDS Sᵀ) or block column (DSD Sᵀ, DDS S)
  int m0, n0;       // tile origin: m within the block (SDD, DSD) or in H (DDS); n expert-local (SDD),
                    // in H (DSD) or within the block (DDS)
  int first, nk;    // first topology entry of the reduction, number of kBK-deep steps
  int col0;         // SDD: global column of the expert's first block column
  int rank = 0;     // this CTA's rank in its cluster: which of the cluster tile's column tiles it owns

  __device__ static int outers(int block_rows) { return kByColumn ? kBlockCols / kSpan : block_rows; }
  // Cluster tiles (Cluster column tiles each).
  __device__ static int64_t count(int block_rows) {
    return sm90_product_tiles(Kind, TransA, TransB, B, H, F, E, BM, BN, block_rows) / Cluster;
  }

  // Tiles are taken in groups of Group outer indices, the outer index fastest: the CTAs running at the
  // same time share operand tiles (the weights' tile across Group block rows, a block row across the
  // group's column tiles) through L2, instead of each sweeping a whole expert's weights. Group 1 is plain
  // outer-major order; the last group (or the only one, when Group > outers) holds the outers left over.
  // The order only permutes the tiles: their count (sm90_product_tiles) does not depend on it.
  static_assert(Group >= 1, "the group holds at least one outer index");
  static constexpr int kGroup = Group;

  __device__ void decode(int64_t t, int outers, const Topology& topo) {
    constexpr int64_t per_outer = int64_t(MT) * NTC;
    const int64_t group = t / (kGroup * per_outer);
    const int64_t rem = t % (kGroup * per_outer);
    const int g = min(kGroup, outers - int(group) * kGroup);  // group · kGroup < outers: fits int
    outer = int(group) * kGroup + int(rem % g);
    const int64_t mn = rem / g;
    n0 = (int(mn % NTC) * Cluster + rank) * BN;
    m0 = int(mn / NTC) * BM;
    if constexpr (Kind == kSDD) {
      first = ptx::ld_nc_s32(topo.offsets + outer);
      col0 = ptx::ld_nc_s32(topo.column_indices + first) * B;
      nk = H / kBK;
    } else {
      const int* offs = kByColumn ? topo.offsets_t : topo.offsets;
      const int rc0 = outer * kSpan;  // the (first) block row or column reduced along
      first = ptx::ld_nc_s32(offs + rc0);
      nk = (ptx::ld_nc_s32(offs + rc0 + 1) - first) * kStepsPerBlock;
    }
  }

  // The topology entries one reduction block needs: its position in data (blk) and the block row or
  // column (rc) that selects the dense operand's rows. Fetched a block ahead by the producer, so the
  // index loads' latency stays off the TMA issue path.
  struct Segment {
    int blk, rc;
  };
  __device__ Segment segment(int j, const Topology& topo) const {
    const int i = first + j;
    if constexpr (Kind == kSDD) return {0, 0};
    else if constexpr (kByColumn)
      return {ptx::ld_nc_s32_early(topo.block_offsets_t + i), ptx::ld_nc_s32_early(topo.column_indices_t + i)};
    else return {i, ptx::ld_nc_s32_early(topo.column_indices + i)};
  }
  __device__ int blocks() const { return Kind == kSDD ? 0 : nk / kStepsPerBlock; }

  // Issues the TMA loads of reduction step ks (of segment `seg`) into one stage (producer thread only).
  __device__ void load(int ks, Segment seg, const void* amap, const void* bmap, char* a_s, char* b_s,
                       uint64_t* bar) const {
    // A, shared by the cluster's CTAs: CTA 0 multicasts it to all (the others' full barriers count its
    // bytes as they land), the others load none.
    auto a2d = [&](char* dst, int c0, int c1) {
      if constexpr (Cluster == 1) ptx::tma_load_2d(dst, amap, bar, c0, c1);
      else if (rank == 0) ptx::tma_load_2d_multicast(dst, amap, bar, c0, c1, (1 << Cluster) - 1);
    };
    auto a3d = [&](char* dst, int c0, int c1, int c2) {
      if constexpr (Cluster == 1) ptx::tma_load_3d(dst, amap, bar, c0, c1, c2);
      else if (rank == 0) ptx::tma_load_3d_multicast(dst, amap, bar, c0, c1, c2, (1 << Cluster) - 1);
    };
    auto b2d = [&](char* dst, int c0, int c1) { ptx::tma_load_2d(dst, bmap, bar, c0, c1); };
    // An MN-major operand of `rows` along M/N comes as rows/64 chunks of {64 (MN), 64 (K)}, each loaded by
    // a2d (is_a) or b2d. (A generic lambda taking the loader would be a host function to NVRTC.)
    auto chunks = [&](bool is_a, char* dst, int rows, int mn, int k) {
#pragma unroll
      for (int q = 0; q < rows / 64; ++q) {
        if (is_a) a2d(dst + q * kChunk, mn + 64 * q, k);
        else b2d(dst + q * kChunk, mn + 64 * q, k);
      }
    };
    if constexpr (Kind == kSDD) {
      const int h = ks * kBK;
      const int row = outer * B + m0;
      if constexpr (kAK) a2d(a_s, h, row);
      else chunks(true, a_s, BM, row, h);
      load_sdd_b(ks, bmap, b_s, bar);
    } else {
      const int kk = (ks % kStepsPerBlock) * kBK;
      const int blk = seg.blk, k0 = seg.rc * B + kk;  // k0: the dense operand's reduction row/column
      if constexpr (Kind == kDSD && !TransA) {  // S · op(B): block blk of row `outer`, column rc
        a3d(a_s, kk, m0, blk);
        if constexpr (kBKm) b2d(b_s, k0, n0);
        else chunks(false, b_s, BN, n0, k0);
      } else if constexpr (Kind == kDSD) {  // Sᵀ · op(B): block blk of column `outer`, block row rc
#pragma unroll
        for (int q = 0; q < BM / 64; ++q) a3d(a_s + q * kChunk, m0 + 64 * q, kk, blk);
        if constexpr (kBKm) b2d(b_s, k0, n0);
        else chunks(false, b_s, BN, n0, k0);
      } else if constexpr (!TransB) {  // op(A) · S: block blk of column `outer`, block row rc
        if constexpr (kAK) a2d(a_s, k0, m0);
        else chunks(true, a_s, BM, m0, k0);
#pragma unroll
        for (int q = 0; q < BN / 64; ++q) {
          if constexpr (kSpan > 1)  // n0 = 0: chunk q lies in the tile's block q·64 / B
            ptx::tma_load_3d(b_s + q * kChunk, bmap, bar, 64 * q % B, kk, blk + 64 * q / B);
          else ptx::tma_load_3d(b_s + q * kChunk, bmap, bar, n0 + 64 * q, kk, blk);
        }
      } else {  // op(A) · Sᵀ: block blk of row `outer`, column rc
        if constexpr (kAK) a2d(a_s, k0, m0);
        else chunks(true, a_s, BM, m0, k0);
        ptx::tma_load_3d(b_s, bmap, bar, kk, n0, blk);
      }
    }
  }

  // SDD's B (the weights' rows of this tile's columns) for reduction step ks.
  __device__ void load_sdd_b(int ks, const void* bmap, char* b_s, uint64_t* bar) const {
    const int h = ks * kBK;
    if constexpr (kBKm) ptx::tma_load_2d(b_s, bmap, bar, h, col0 + n0);
    else
#pragma unroll
      for (int q = 0; q < BN / 64; ++q) ptx::tma_load_2d(b_s + q * kChunk, bmap, bar, col0 + n0 + 64 * q, h);
  }

  // Stores the staged box at column n and row m of the tile (64 columns, as many rows as the C tensor
  // map's box) with the C tensor map: SDD into its block of data [blocks, B, B], the others into the
  // dense output.
  __device__ void store_box(const void* cmap, const char* src, int n, int m) const {
    n += n0, m += m0;
    if constexpr (Kind == kSDD) ptx::tma_store_3d(cmap, src, n % B, m, first + n / B);
    else if constexpr (Kind == kDSD) ptx::tma_store_2d(cmap, src, n, outer * B + m);
    else ptx::tma_store_2d(cmap, src, outer * kSpan * B + n, m);
  }
  // Stores 64-column chunk q of the tile (BM rows, staged in shared memory).
  __device__ void store_chunk(const void* cmap, const char* src, int q) const { store_box(cmap, src, 64 * q, 0); }

  // Loads chunk q of the epilogue's operand (SDD only: the pre-activation blocks) into shared memory.
  __device__ void load_aux_chunk(const void* map, char* dst, int q, uint64_t* bar) const {
    const int n = n0 + 64 * q;
    ptx::tma_load_3d(dst, map, bar, n % B, m0, first + n / B);
  }
};

// GROUP: the tile order (Tiles::kGroup), TileConfig::group; the emitter passes it only when it is not 8.
// PINGPONG: the consumers' schedule, TileConfig::pingpong. Cooperative (false): both consumer warpgroups
// share each tile (side by side along N when BM = 64, stacked along M when BM = 128) and run its epilogue
// together, so the tensor cores idle during every epilogue. Ping-pong (true): each consumer owns whole
// BM×BN tiles, taking every other tile of the CTA; their main loops alternate (a pair of ordered
// mbarriers), so one warpgroup's epilogue runs under the other's wgmma. Each has its own staging buffer.
// GATHER (SDD with a row-major A only; KernelSpec::gather): A's rows are gathered from the [tokens, H]
// matrix args.p.a through args.p.gather_rows (−1: a zero row) by the whole producer warpgroup with
// cp.async, which TMA cannot do on sm_90 (it has no row-gather mode); B still arrives by TMA.
// GATED (SDD with a forward epilogue only; KernelSpec::gated): a second B (args.b2, the gate's weights V1)
// arrives in each stage beside the first; the consumers keep two accumulators, a = A·op(B) and
// g = A·op(B2), and the epilogue writes h = act(a)·g to C, a to aux and g to aux2 (each when set): the
// gated experts' first layer and its GLU in one pass over A.
// STORE_CHUNKS (plain and forward activation epilogues; TileConfig::store_chunks): instead of whole-tile
// staging buffers, each consumer warpgroup stages its own rows in 64×64 chunks through STORE_CHUNKS
// rotating buffers and stores each chunk as soon as it is staged (the C and aux maps' box is then 64
// rows). The shared memory this frees buys a deeper ring: cooperative 128×256 fits 4 stages instead of 3,
// ping-pong 128×192 5 instead of 3 (its two whole-tile buffers took 96 KiB).
// ACT_WARPS (cooperative activation SDD, forward or gradient; TileConfig::act_warps): the consumers stage
// the raw tile, rounded to 16 bits, and go on to their next tile's main loop; the producer warpgroup's
// three idle warps finish the epilogue in place and store C. Forward: the staged pre-activation goes to
// aux first, then becomes act(pre). Gradient: the staged g becomes g · act'(pre), the pre-activation
// arriving by TMA one BM × 64 chunk at a time into a buffer of its own. Gated: a and g are staged side by
// side (both go to aux and aux2 when kept), and a becomes act(a) · g. The tensor cores then idle only for
// the staging, not for the activation's transcendentals, the pre-activation's load or further stores.
template <class Elem, int Kind, bool TransA, bool TransB, int B, int H, int F, int E, int BM, int BN, int STAGES,
          int Epi = kEpiNone, int GROUP = 8, bool PINGPONG = false, bool GATHER = false, bool GATED = false,
          int CLUSTER = 1, bool SCATTER = false, int STORE_CHUNKS = 0, bool ACT_WARPS = false>
__device__ __forceinline__ void product(const Sm90ProductArgs& args) {
  static_assert(Epi == kEpiNone || Kind == kSDD, "epilogues apply to SDD only");
  static_assert(!GATHER || (Kind == kSDD && !TransA), "the gather reads the rows of a row-major SDD A");
  static_assert(!GATED || (Kind == kSDD && !epilogue_is_gradient(Epi)), "the gated product is a forward SDD");
  static_assert(!GATHER || CLUSTER == 1, "the gather's A is loaded per CTA (cp.async), not multicast");
  static_assert(!SCATTER || (Kind == kDSD && !TransA && !TransB && Epi == kEpiNone),
                "the scatter writes the rows of a DSD nn");
  using T = Tiles<Elem, Kind, TransA, TransB, B, H, F, E, BM, BN, GROUP, CLUSTER>;
  constexpr int kTileWGs = PINGPONG ? 1 : 2;              // consumer warpgroups per tile
  constexpr int WGN = !PINGPONG && BM == 64 ? 2 : 1;      // cooperative BM 64: consumers side by side along N
  constexpr int MI = PINGPONG ? BM / 64 : 1;              // m64 wgmma row groups per warpgroup
  constexpr int NW = BN / WGN;                            // columns per consumer warpgroup: the wgmma N
  static_assert(BM == 64 || BM == 128, "BM is 64 or 128");
  static_assert(NW == 64 || NW == 128 || NW == 192 || NW == 256,
                "each consumer warpgroup covers 64, 128, 192 or 256 columns");
  constexpr int kSets = GATED ? 2 : 1;  // accumulator sets (and B operands) per tile
  // 128 fp32 accumulators per thread; a plain ping-pong warpgroup may hold 192 (128×192, the shape of
  // cuBLAS's fastest small-H kernels), leaving it 40 of its 232 registers: ptxas's spill check decides.
  static_assert(kSets * MI * NW <= (PINGPONG && !GATED ? 384 : 256), "too many fp32 accumulators per thread");
  constexpr uint32_t kABytes = BM * kBK * 2, kBBytes = BN * kBK * 2, kCBytes = BM * BN * 2;
  constexpr uint32_t kStageBytes = kABytes + kSets * kBBytes;  // A, then B (and B2)
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "stages must keep the 1 KiB swizzle alignment");
  constexpr int kBuffers = PINGPONG ? 2 : 1;  // output staging buffers: one per tile in flight
  static_assert(STORE_CHUNKS == 0 || (!epilogue_is_gradient(Epi) && !GATED && !SCATTER),
                "chunked staging serves the plain and the forward activation epilogues");
  static_assert(!ACT_WARPS || ((Epi != kEpiNone || GATED) && !PINGPONG && !GATHER && STORE_CHUNKS == 0),
                "the activation warps serve the cooperative activation SDDs with whole-tile staging");
  // Named barriers between the consumers (256 threads) and the activation warps (96): the tile is staged;
  // the staging buffer is free again; the activation warps among themselves.
  constexpr int kStagedBar = 5, kFreeBar = 6, kActBar = 7, kActThreads = 96;
  constexpr int kWgChunks = MI * NW / 64;  // a consumer warpgroup's 64×64 output chunks per tile
  static_assert(STORE_CHUNKS == 0 || (STORE_CHUNKS < kWgChunks && kWgChunks % STORE_CHUNKS == 0),
                "the chunk buffers rotate evenly through fewer than a warpgroup's chunks");
  constexpr uint32_t kChunkStage = 64 * 128;  // one warpgroup's 64 rows of a 64-column chunk
  // The activation warps' second buffer, after the tile: a gradient's pre-activation chunk, the gated
  // SDD's g tile.
  constexpr uint32_t kActExtraBytes = sm90_act_extra_bytes(BM, BN, ACT_WARPS, GATED, epilogue_is_gradient(Epi));
  constexpr uint32_t kStagingBytes =
      STORE_CHUNKS > 0 ? 2 * STORE_CHUNKS * kChunkStage : kBuffers * kCBytes + kActExtraBytes;

  extern __shared__ char smem_raw[];
  char* smem = smem_raw + ((1024 - (ptx::smem_addr(smem_raw) & 1023)) & 1023);
  char* c_tiles = smem + STAGES * kStageBytes;  // per buffer: BN/64 chunks of [BM rows][128 B], swizzled
  uint64_t* full = reinterpret_cast<uint64_t*>(c_tiles + kStagingBytes);
  uint64_t* empty = full + STAGES;
  uint64_t* aux_full = empty + STAGES;  // per buffer: the epilogue operand's TMA load
  uint64_t* order = aux_full + kBuffers;  // ping-pong: order[c] lets consumer c start its next main loop
  auto a_stage = [&](int s) { return smem + s * kStageBytes; };
  auto b_stage = [&](int s) { return smem + s * kStageBytes + kABytes; };

  const int wg = threadIdx.x / 128;
  // CLUSTER: the cluster's CTAs take the cluster tiles in step (T::decode); CTA 0 multicasts A into every
  // CTA's stage, so its producer also waits for the other CTAs' consumers to free that stage.
  const int rank = CLUSTER > 1 ? int(ptx::cluster_ctarank()) : 0;
  const int64_t first_tile = blockIdx.x / CLUSTER, tile_stride = gridDim.x / CLUSTER;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      ptx::mbarrier_init(&full[s], GATHER ? 1 + 128 : 1);  // the TMA thread (+ each gathering thread)
      // Lane 0 of each warp of the tile's consumers (in every CTA of the cluster, for CTA 0).
      ptx::mbarrier_init(&empty[s], 4 * kTileWGs * (rank == 0 ? CLUSTER : 1));
    }
    for (int b = 0; b < kBuffers; ++b) ptx::mbarrier_init(&aux_full[b], 1);
    if constexpr (PINGPONG) ptx::mbarrier_init(&order[0], 1), ptx::mbarrier_init(&order[1], 1);
    ptx::fence_barrier_init();
  }
  // The barriers are initialized before any CTA of the cluster multicasts into or arrives on them.
  if constexpr (CLUSTER > 1) ptx::cluster_sync();
  else __syncthreads();

  const Topology& topo = args.p.topo;
  const int block_rows = ptx::ld_nc_s32(topo.block_rows);
  const int outers = T::outers(block_rows);
  const int64_t tiles = T::count(block_rows);
  int stage = 0;
  uint32_t phase = 0;
  auto advance = [&] {
    if (++stage == STAGES) stage = 0, phase ^= 1;
  };

  // Registers per thread after the rebalance (1 CTA of 384 threads: 128·P + 256·C ≤ 65536). A gathering
  // producer with 64-row tiles keeps its four rows' addresses live across the stage loop and needs 48
  // (at 40 ptxas spills 4 bytes there); the consumers then have 224.
  // A clustered producer also carries its rank and the multicast mask through the load path (at 40 ptxas
  // spills in DSD NN's segment prefetch), so it gets 48 as well.
  // The activation warps work on eight elements at once and get 56 (at 40, ptxas spilled in the GELU
  // gradient's act'(pre)).
  constexpr bool kWideProducer = (GATHER && BM == 64) || CLUSTER > 1 || ACT_WARPS;
  constexpr int kProducerRegs = ACT_WARPS ? 56 : kWideProducer ? 48 : 40, kConsumerRegs = kWideProducer ? 224 : 232;
  if (wg == 0) {
    ptx::setmaxnreg_dec<kProducerRegs>();
    if constexpr (GATHER) {
      // Eight threads per row, 16 bytes each of the stage's 128-byte slice, rows r0 + 16·i: a warp reads
      // four whole 128-byte row slices per instruction. A row's source is read once per tile; the
      // destination is the same 128-byte swizzle TMA writes (16-byte chunk c of row r at c ^ (r % 8)).
      constexpr int kRows = BM / 16;
      const int pt = threadIdx.x, chunk = pt % 8, r0 = pt / 8;
      const char* x = static_cast<const char*>(args.p.a);
      if (pt == 0) ptx::prefetch_tensormap(&args.b);
      for (int64_t t = first_tile; t < tiles; t += tile_stride) {
        T tile;
        tile.rank = rank;
        tile.decode(t, outers, topo);
        int32_t src[kRows];
#pragma unroll
        for (int i = 0; i < kRows; ++i)
          src[i] = ptx::ld_nc_s32(args.p.gather_rows + tile.outer * B + tile.m0 + r0 + 16 * i);
        for (int ks = 0; ks < tile.nk; ++ks) {
          ptx::mbarrier_wait(&empty[stage], phase ^ 1);
          if (pt == 0) {
            ptx::mbarrier_arrive_expect_tx(&full[stage], kSets * kBBytes);
            tile.load_sdd_b(ks, &args.b, b_stage(stage), &full[stage]);
            if constexpr (GATED) tile.load_sdd_b(ks, &args.b2, b_stage(stage) + kBBytes, &full[stage]);
          }
          const uint32_t a_s = ptx::smem_addr(a_stage(stage)) + r0 * 128 + ((chunk ^ (r0 % 8)) << 4);
#pragma unroll
          for (int i = 0; i < kRows; ++i) {
            const int64_t elem = int64_t(src[i] < 0 ? 0 : src[i]) * H + ks * kBK + chunk * 8;
            ptx::cp_async_16_zfill(a_s + i * 16 * 128, x + elem * 2, src[i] >= 0);
          }
          ptx::cp_async_mbarrier_arrive_noinc(&full[stage]);
          advance();
        }
      }
    } else if (ACT_WARPS && threadIdx.x >= 32) {
      // The activation warps: per tile, the staged pre-activation goes to aux (when kept), then each
      // thread turns 16-byte pieces of the staging buffer into act(pre) in place (elementwise: the
      // swizzle does not matter), and C leaves by TMA. The consumers stage their next tile once that
      // store has read the buffer.
      const int at = threadIdx.x - 32;
      const bool act_storer = at == 0;
      const uint32_t buf = ptx::smem_addr(c_tiles);
      uint32_t pre_phase = 0;
      for (int64_t t = first_tile; t < tiles; t += tile_stride) {
        T tile;
        tile.rank = rank;
        tile.decode(t, outers, topo);
        ptx::named_barrier(kStagedBar, 256 + kActThreads);
        if constexpr (epilogue_is_gradient(Epi)) {
          // Column chunk q of the staged g is [BM rows][128 B] with the 128-byte swizzle, as is the
          // pre-activation's BM × 64 box in its buffer: a 16-byte piece sits at the same offset in both.
          char* const pre = c_tiles + kCBytes;
          const uint32_t pre_s = ptx::smem_addr(pre);
          for (int q = 0; q < BN / 64; ++q) {
            if (act_storer) {
              ptx::mbarrier_arrive_expect_tx(aux_full, BM * 128);
              tile.load_aux_chunk(&args.aux, pre, q, aux_full);
            }
            ptx::mbarrier_wait(aux_full, pre_phase);
            pre_phase ^= 1;
            const uint32_t g_s = buf + q * (BM * 128);
#pragma unroll 2
            for (int j = at; j < BM * 8; j += kActThreads) {
              unsigned v[4], p[4];
              ptx::ld_shared_v4_u32(g_s + j * 16, v);
              ptx::ld_shared_v4_u32(pre_s + j * 16, p);
#pragma unroll
              for (int k = 0; k < 4; ++k)
                v[k] = Elem::pack2(apply_grad<Epi>(Elem::to_float(v[k] & 0xffff), Elem::to_float(p[k] & 0xffff)),
                                   apply_grad<Epi>(Elem::to_float(v[k] >> 16), Elem::to_float(p[k] >> 16)));
              ptx::st_shared_v4_u32(g_s + j * 16, v);
            }
            ptx::named_barrier(kActBar, kActThreads);  // the chunk is read before the next one lands
          }
        } else {
          if (args.p.aux || (GATED && args.p.aux2)) {  // the pre-activations, before they are overwritten
            if (act_storer) {
              if (args.p.aux)
#pragma unroll
                for (int q = 0; q < BN / 64; ++q) tile.store_chunk(&args.aux, c_tiles + q * (BM * 128), q);
              if (GATED && args.p.aux2)
#pragma unroll
                for (int q = 0; q < BN / 64; ++q) tile.store_chunk(&args.aux2, c_tiles + kCBytes + q * (BM * 128), q);
              ptx::bulk_commit();
              ptx::bulk_wait_read();
            }
            ptx::named_barrier(kActBar, kActThreads);
          }
#pragma unroll 4
          for (int j = at; j < int(kCBytes / 16); j += kActThreads) {
            unsigned v[4];
            ptx::ld_shared_v4_u32(buf + j * 16, v);
            if constexpr (GATED) {  // act(a) · g; g at the same offset of the second tile
              unsigned g[4];
              ptx::ld_shared_v4_u32(buf + kCBytes + j * 16, g);
#pragma unroll
              for (int k = 0; k < 4; ++k)
                v[k] = Elem::pack2(apply_act<Epi>(Elem::to_float(v[k] & 0xffff)) * Elem::to_float(g[k] & 0xffff),
                                   apply_act<Epi>(Elem::to_float(v[k] >> 16)) * Elem::to_float(g[k] >> 16));
            } else {
#pragma unroll
              for (int k = 0; k < 4; ++k)
                v[k] = Elem::pack2(apply_act<Epi>(Elem::to_float(v[k] & 0xffff)),
                                   apply_act<Epi>(Elem::to_float(v[k] >> 16)));
            }
            ptx::st_shared_v4_u32(buf + j * 16, v);
          }
        }
        ptx::fence_proxy_async();  // the generic-proxy writes must be visible to the TMA engine
        ptx::named_barrier(kActBar, kActThreads);
        if (act_storer) {
#pragma unroll
          for (int q = 0; q < BN / 64; ++q) tile.store_chunk(&args.c, c_tiles + q * (BM * 128), q);
          ptx::bulk_commit();
        }
        if (t + tile_stride < tiles) {  // the consumers wait for this only before a next tile
          if (act_storer) ptx::bulk_wait_read();
          ptx::named_barrier_arrive(kFreeBar, 256 + kActThreads);
        }
      }
      if (act_storer) ptx::bulk_wait();  // shared memory must outlive the last store
    } else if (threadIdx.x == 0) {
      ptx::prefetch_tensormap(&args.a);
      ptx::prefetch_tensormap(&args.b);
      if constexpr (GATED) ptx::prefetch_tensormap(&args.b2);
      for (int64_t t = first_tile; t < tiles; t += tile_stride) {
        T tile;
        tile.rank = rank;
        tile.decode(t, outers, topo);
        const int nb = tile.blocks();
        typename T::Segment cur{}, next{};
        if (nb > 0) next = tile.segment(0, topo);
        for (int ks = 0; ks < tile.nk; ++ks) {
          if (Kind != kSDD && ks % T::kStepsPerBlock == 0) {
            const int j = ks / T::kStepsPerBlock;
            cur = next;
            if (j + 1 < nb) next = tile.segment(j + 1, topo);  // in flight while this block streams
          }
          ptx::mbarrier_wait(&empty[stage], phase ^ 1);
          ptx::mbarrier_arrive_expect_tx(&full[stage], kStageBytes);
          tile.load(ks, cur, &args.a, &args.b, a_stage(stage), b_stage(stage), &full[stage]);
          if constexpr (GATED) tile.load_sdd_b(ks, &args.b2, b_stage(stage) + kBBytes, &full[stage]);
          advance();
        }
      }
    }
  } else {
    ptx::setmaxnreg_inc<kConsumerRegs>();
    const int c = wg - 1;  // consumer index
    const int wm = WGN == 1 && !PINGPONG ? c : 0, wn = WGN == 1 ? 0 : c;
    const int wt = threadIdx.x % 128, warp = wt / 32, lane = threadIdx.x % 32;
    // The thread that issues (and later waits for) the tile's TMA stores: bulk groups are per thread.
    // Chunked staging: each consumer warpgroup stores its own rows.
    const bool storer = PINGPONG || STORE_CHUNKS > 0 ? wt == 0 : threadIdx.x == 128;
    auto sync_tile = [&] {  // the warpgroups that share the staging buffer
      if constexpr (PINGPONG) ptx::named_barrier(1 + c, 128);
      else ptx::named_barrier(1, 256);
    };
    char* c_tile = c_tiles + (PINGPONG ? c * kCBytes : 0);
    uint64_t* my_aux = aux_full + (PINGPONG ? c : 0);
    // Offsets into a stage and the per-k16 step, for each operand's majorness. K-major: rows of 128 B,
    // 8-row atoms (SBO 1 KiB), k16 = +32 B, 64 rows = 8 KiB. MN-major: {64, 64} chunks (LBO), 8-row K
    // atoms (SBO 1 KiB), k16 = +16 rows = +2 KiB, 64 rows = one chunk.
    constexpr uint32_t a_m64 = T::kAK ? 64 * 128 : kChunk;
    const uint32_t a_off = wm * a_m64;
    const uint32_t b_off = T::kBKm ? wn * NW * 128 : wn * (NW / 64) * kChunk;
    constexpr uint32_t a_step = T::kAK ? 32 : 2048, b_step = T::kBKm ? 32 : 2048;
    const uint32_t smem_base = ptx::smem_addr(smem);
    uint32_t aux_phase = 0, order_phase = 0;
    int chunk_buf = 0;  // chunked staging: the buffer the next chunk goes through
    // Hands a stage back: to this CTA's producer, and to CTA 0's, whose multicast A also lands in it.
    auto release = [&](int s) {
      if (lane != 0) return;
      ptx::mbarrier_arrive(&empty[s]);
      if constexpr (CLUSTER > 1)
        if (rank != 0) ptx::mbarrier_arrive_cluster(&empty[s], 0);
    };

    int64_t i = 0;  // the tile's index among this CTA's tiles
    for (int64_t t = first_tile; t < tiles; t += tile_stride, ++i) {
      T tile;
      tile.rank = rank;
      tile.decode(t, outers, args.p.topo);
      if constexpr (PINGPONG) {
        if ((i & 1) != c) {  // the other consumer's tile: its stages go by
          const int s = stage + tile.nk;
          stage = s % STAGES, phase ^= (s / STAGES) & 1;
          continue;
        }
        // Wait until the previous tile's consumer has waited for all its stages: from then on, every
        // stage this tile waits for is the fill it expects (a parity wait cannot see two fills ahead),
        // and the main loops alternate on the tensor cores.
        if (i > 0) ptx::mbarrier_wait(&order[c], order_phase), order_phase ^= 1;
      }
      float acc[kSets][MI][NW / 2];  // [1]: the gate's accumulators (GATED)
#pragma unroll
      for (int u = 0; u < kSets; ++u)
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int j = 0; j < NW / 2; ++j) acc[u][mi][j] = 0.f;
      auto fence_acc = [&] {
#pragma unroll
        for (int u = 0; u < kSets; ++u)
#pragma unroll
          for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int j = 0; j < NW / 2; ++j) ptx::fence_operand(acc[u][mi][j]);
      };
      // One wgmma group stays in flight: step ks is issued before step ks − 1 is waited for, and only
      // then is ks − 1's stage handed back to the producer.
      int held = -1;
      for (int ks = 0; ks < tile.nk; ++ks) {
        ptx::mbarrier_wait(&full[stage], phase);
        // cp.async writes through the generic proxy; wgmma reads through the async proxy.
        if constexpr (GATHER) ptx::fence_proxy_async();
        const uint32_t a_base = smem_base + stage * kStageBytes + a_off;
        const uint32_t b_base = smem_base + stage * kStageBytes + kABytes + b_off;
        fence_acc();
        ptx::wgmma_fence();
#pragma unroll
        for (int k = 0; k < kBK / 16; ++k)
#pragma unroll
          for (int u = 0; u < kSets; ++u)  // B2 sits right after B in the stage
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
              ptx::wgmma_ss<Elem::kIsBf16, NW, !T::kAK, !T::kBKm>(
                  acc[u][mi], ptx::sw128_desc(a_base + mi * a_m64 + k * a_step, kChunk, 1024),
                  ptx::sw128_desc(b_base + u * kBBytes + k * b_step, kChunk, 1024), 1);
        ptx::wgmma_commit();
        ptx::wgmma_wait<1>();
        if (held >= 0) release(held);
        held = stage;
        advance();
      }
      if constexpr (PINGPONG)
        if (wt == 0) ptx::mbarrier_arrive(&order[c ^ 1]);  // the other consumer's main loop may start
      ptx::wgmma_wait<0>();
      fence_acc();
      if (held >= 0) release(held);
      // Epilogue: registers → shared memory (bf16/fp16, 128-byte swizzle: conflict-free for this
      // layout) → TMA store, which drains while the next tile's mainloop runs. Accumulator layout of
      // m64nNk16: for each 8-column group j, a thread holds rows warp·16 + lane/4 (+8) and columns
      // 8j + 2·(lane % 4) (+1).
      const uint32_t c_base = ptx::smem_addr(c_tile);
      // Element (row, col) of the staged tile: 64-column chunks of [BM rows][128 B], 16-byte chunk c of row r
      // at c ^ (r % 8).
      auto staged = [&](int row, int col) {
        return c_base + (col / 64) * (BM * 128) + row * 128 + ((((col % 64) / 8) ^ (row % 8)) * 16) + (col % 8) * 2;
      };
      // Writes the accumulator into the staged tile (kPlain: as is, kAct: act(acc), kGrad: acc · act'(pre)
      // with pre read from the same place; GATED: kGate the gate's accumulator g, kGlu act(acc) · g), then
      // one thread stores the tile through `map`. Per 16 columns of a warp's 16 rows, one stmatrix (and for
      // kGrad one ldmatrix) of four 8×8 matrices: matrix k holds rows +8·(k % 2) and columns +8·(k / 2),
      // which is the accumulator fragment (h = k % 2, group j + k / 2) as wgmma leaves it.
      enum { kPlain, kAct, kGrad, kGate, kGlu };
      const int m_row = warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2), m_col = 8 * (lane / 16);
      auto stage = [&](int mode, uint32_t offset = 0) {  // offset: into the activation warps' second tile
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int j = 0; j < NW / 8; j += 2) {
            const uint32_t addr = staged((wm + mi) * 64 + m_row, wn * NW + j * 8 + m_col) + offset;
            unsigned pre[4], out[4];
            if (mode == kGrad) ptx::ldmatrix_x4(pre, addr);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int jj = j + k / 2, h = k % 2;
              const int u = mode == kGate ? kSets - 1 : 0;
              float x = acc[u][mi][jj * 4 + 2 * h], y = acc[u][mi][jj * 4 + 2 * h + 1];
              if (mode == kGlu) {
                x = apply_act<Epi>(x) * acc[kSets - 1][mi][jj * 4 + 2 * h];
                y = apply_act<Epi>(y) * acc[kSets - 1][mi][jj * 4 + 2 * h + 1];
              } else if (mode == kAct) {
                x = apply_act<Epi>(x);
                y = apply_act<Epi>(y);
              } else if (mode == kGrad) {
                x = apply_grad<Epi>(x, Elem::to_float(pre[k] & 0xffff));
                y = apply_grad<Epi>(y, Elem::to_float(pre[k] >> 16));
              }
              out[k] = Elem::pack2(x, y);
            }
            ptx::stmatrix_x4(addr, out);
          }
      };
      auto stage_and_store = [&](const void* map, int mode) {
        stage(mode);
        ptx::fence_proxy_async();  // the generic-proxy writes must be visible to the TMA engine
        sync_tile();
        if (storer) {
#pragma unroll
          for (int q = 0; q < BN / 64; ++q) tile.store_chunk(map, c_tile + q * (BM * 128), q);
          ptx::bulk_commit();
        }
      };
      if constexpr (STORE_CHUNKS > 0) {
        // Each 64×64 chunk (mi, q) of this warpgroup's rows goes through the next of its STORE_CHUNKS
        // buffers, round robin across tiles, once the store that last used it (STORE_CHUNKS stores ago) has
        // read it. Ping-pong: the warpgroup's own buffers, its MI row groups one after the other. A forward
        // activation writes act(acc) to C, and first the pre-activation acc to aux when kept: its two
        // stores of a chunk stream one after the other instead of waiting for a whole tile's.
        char* const bufs = c_tiles + c * (STORE_CHUNKS * kChunkStage);
        const uint32_t bufs_base = ptx::smem_addr(bufs);
        const int outputs = Epi != kEpiNone && args.p.aux ? 2 : 1;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int q = 0; q < NW / 64; ++q)
            for (int o = 0; o < outputs; ++o) {
              const bool pre = o + 1 < outputs;  // the kept pre-activation, before the activation
              const bool act = Epi != kEpiNone && !pre;
              if (storer) ptx::bulk_wait_read_n<STORE_CHUNKS - 1>();
              ptx::named_barrier(3 + c, 128);
              const uint32_t buf = bufs_base + chunk_buf * kChunkStage;
#pragma unroll
              for (int jj = 0; jj < 8; ++jj)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                  const int row = warp * 16 + lane / 4 + 8 * h, j = 8 * q + jj;
                  float x = acc[0][mi][j * 4 + 2 * h], y = acc[0][mi][j * 4 + 2 * h + 1];
                  if (act) x = apply_act<Epi>(x), y = apply_act<Epi>(y);
                  ptx::st_shared_u32(buf + row * 128 + ((jj ^ (row % 8)) * 16) + (lane % 4) * 4, Elem::pack2(x, y));
                }
              ptx::fence_proxy_async();  // the generic-proxy writes must be visible to the TMA engine
              ptx::named_barrier(3 + c, 128);
              if (storer) {
                tile.store_box(pre ? &args.aux : &args.c, bufs + chunk_buf * kChunkStage, wn * NW + 64 * q,
                               (wm + mi) * 64);
                ptx::bulk_commit();
              }
              if (++chunk_buf == STORE_CHUNKS) chunk_buf = 0;
            }
        continue;
      }
      if constexpr (ACT_WARPS) {
        // The raw tile goes to the activation warps; once they have stored the previous one out of the
        // buffer (the tensor cores idle only for this wait, normally none, and the staging).
        if (i > 0) ptx::named_barrier(kFreeBar, 256 + kActThreads);
        stage(kPlain);
        if constexpr (GATED) stage(kGate, kCBytes);  // g beside a
        ptx::fence_proxy_async();  // the activation warps' TMA store of aux reads what this thread wrote
        ptx::named_barrier_arrive(kStagedBar, 256 + kActThreads);
        continue;
      }
      if (storer) ptx::bulk_wait_read();  // the previous tile's store has left the buffer
      if constexpr (epilogue_is_gradient(Epi)) {
        // The pre-activation tile arrives by TMA into the staging buffer; each thread turns its own
        // elements into g · act'(pre) in place.
        if (storer) {
          ptx::mbarrier_arrive_expect_tx(my_aux, BM * BN * 2);
#pragma unroll
          for (int q = 0; q < BN / 64; ++q) tile.load_aux_chunk(&args.aux, c_tile + q * (BM * 128), q, my_aux);
        }
        ptx::mbarrier_wait(my_aux, aux_phase);
        aux_phase ^= 1;
        stage_and_store(&args.c, kGrad);
      } else if constexpr (GATED) {
        // The pre-activations a and g for the backward pass (each when set), then h = act(a) · g; each
        // waits until the previous store has read the staging buffer.
        sync_tile();
        if (args.p.aux) {
          stage_and_store(&args.aux, kPlain);
          if (storer) ptx::bulk_wait_read();
          sync_tile();
        }
        if (args.p.aux2) {
          stage_and_store(&args.aux2, kGate);
          if (storer) ptx::bulk_wait_read();
          sync_tile();
        }
        stage_and_store(&args.c, kGlu);
      } else {
        sync_tile();
        if constexpr (Epi != kEpiNone) {
          if (args.p.aux) {  // keep the pre-activation for the backward pass
            stage_and_store(&args.aux, kPlain);
            // The activation is computed in the registers while that store reads the staging buffer,
            // not after the wait for it.
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
              for (int j = 0; j < NW / 2; ++j) acc[0][mi][j] = apply_act<Epi>(acc[0][mi][j]);
            if (storer) ptx::bulk_wait_read();
            sync_tile();
            stage_and_store(&args.c, kPlain);
          } else {
            stage_and_store(&args.c, kAct);
          }
        } else if constexpr (SCATTER) {
          // Each staged row leaves by 16-byte stores to its token's row of C (TMA has no row scatter):
          // the tile's threads take consecutive 16-byte chunks, a row's BN / 8 chunks side by side.
          stage(kPlain);
          sync_tile();
          constexpr int kThreads = PINGPONG ? 128 : 256, kRowChunks = BN / 8;
          const int tid = PINGPONG ? wt : int(threadIdx.x) - 128;
          char* out = static_cast<char*>(args.p.c);
#pragma unroll 4
          for (int i = tid; i < BM * kRowChunks; i += kThreads) {
            const int row = i / kRowChunks, col = (i % kRowChunks) * 8;
            const int token = ptx::ld_nc_s32(args.p.scatter_rows + tile.outer * B + tile.m0 + row);
            if (token < 0) continue;  // a padding row
            unsigned v[4];
            ptx::ld_shared_v4_u32(staged(row, col), v);  // col % 8 == 0: a whole 16-byte chunk
            ptx::st_v4_u32(out + (int64_t(token) * H + tile.n0 + col) * 2, v);
          }
          sync_tile();  // every thread has read the staging buffer before the next tile is staged in it
        } else {
          stage_and_store(&args.c, kPlain);
        }
      }
    }
    if (storer) ptx::bulk_wait();  // shared memory must outlive the last store
  }
  // No CTA leaves while a peer may still arrive on its barriers (or multicast into its stages).
  if constexpr (CLUSTER > 1) ptx::cluster_sync();
}

}  // namespace dmoe::sm90

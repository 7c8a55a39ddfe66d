// sparse24_spmm: Y = W X with W 2:4 sparse (bf16, mma.sp fragment layout) and X, Y dense bf16.
//
// Maths:   Y[i, c] = sum_k W[i, k] X[k, c], f32 accumulation, Y rounded to bf16 once.
// Shapes:  W (M, K) 2:4 along K, X (K, N) row-major, Y (M, N) row-major; N % 8 == 0 (16-byte rows of
//          8 bf16 for cp.async), any M >= 1, any K % 4 == 0 (K is zero-padded to 32 in the layout).
// Buffers: vals [MT*KT*32] uint4 and meta [MT*KT*16] u32 in the layout of sparse24.cuh; X [K*N] bf16;
//          Y [M*N] bf16; all 16-byte aligned.
// Method:  tensor cores through `mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16`,
//          which multiplies a 16x32 2:4 tile (stored as 16x16 plus metadata) by a 32x8 tile: half the
//          multiply work of the dense m16n8k32. Block tile 128 (M) x BN (N) x BK (K), 8 warps as
//          2 (M) x 4 (N), each warp 64 x BN/4: 4 x BN/32 mma.sp per 32 of K, 64 or 128 f32
//          accumulators per thread. A fragments, metadata and the X tile are copied global -> shared
//          with cp.async in a STAGES-deep pipeline (dynamic shared memory). A fragments are read
//          back as one 16-byte ld.shared per lane (the layout is already the register layout); X
//          fragments with ldmatrix.x4.trans from a row-padded tile (rows of BN + 8 bf16:
//          conflict-free for BN = 128 and 256).
// Variants (extern "C" names): sparse24_spmm_bf16_n<BN>_k<BK>_s<STAGES> (mma.sp), the tile configurations
//          listed at the bottom (each checked at compile time). Launch: 256 threads, grid
//          (ceil(N / BN), ceil(M / 128)), dynamic shared memory STAGES * stage bytes (the launcher
//          in crates/lopper-cuda/src/sparse24.rs computes the same; the kernel traps when it gets
//          less). Blocks run in grouped order (block_coords). Default n128_k64_s3: 0.57-0.61x cuBLAS
//          bf16 on an H200, the tensor pipe about half busy (docs/benchmarks.md, "GPU").
//          sparse24_spmm_bf16_w128_k<BK>_s<STAGES> (sm_90a only; a trap elsewhere) do the same with
//          wgmma.mma_async.sp: correct, but 0.33-0.38x cuBLAS today (no TMA, no producer warp, no
//          swizzle; see the section below and docs/benchmarks.md).
// Min SM: 80 (the w tiles: exactly 9.0, sm_90a).
#include "common.cuh"
#include "sparse24.cuh"

using namespace lopper;

namespace {
constexpr int BM = 128, THREADS = 256, WARPS_N = 4;
constexpr int MT_BLOCK = BM / 16;  // 8 A tiles per block per 32 of K

template <int BN, int BK, int STAGES, bool WG = false>
struct Tile {
  static constexpr int COLS = BN;
  static constexpr int BK_ = BK;
  static constexpr int KT = BK / 32;            // fragment-layout K tiles per stage
  static constexpr int WN = BN / WARPS_N;       // warp tile columns
  static constexpr int NJ = WN / 8;             // mma.sp per A fragment per 32 of K
  static constexpr bool WGMMA = WG;
  static constexpr int B_STRIDE = WG ? BN : BN + 8;  // bf16 per smem row of X (mma.sp: 16-byte pad)
  static constexpr int A_CHUNKS = MT_BLOCK * KT * 32;  // uint4, one per lane per tile
  static constexpr int META_WORDS = MT_BLOCK * KT * 16;
  static constexpr int B_CHUNKS = BK * BN / 8;  // 16-byte pieces of the X tile
  static constexpr int A_BYTES = A_CHUNKS * 16;
  static constexpr int META_BYTES = META_WORDS * 4;
  static constexpr int B_BYTES = BK * B_STRIDE * 2;
  static constexpr int STAGE_BYTES = A_BYTES + META_BYTES + B_BYTES;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;

  static_assert(BK % 32 == 0 && BK >= 32, "BK is whole fragment-layout K tiles");
  static_assert(BN % (WARPS_N * 8) == 0 && (BN == 128 || BN == 256),
                "warp tiles of whole mma columns; the pad is conflict-free for 128 and 256");
  static_assert(STAGES >= 2, "a pipeline needs two stages");
  static_assert(NJ * 8 * WARPS_N == BN, "the mma.sp warps cover the block's columns");
  static_assert(A_CHUNKS % THREADS == 0, "A copies spread evenly");
  static_assert(B_CHUNKS % THREADS == 0, "X copies spread evenly");
  static_assert(META_WORDS / 4 <= THREADS, "one metadata copy per thread at most");
  static_assert(STAGE_BYTES % 16 == 0, "stages stay 16-byte aligned");
  static_assert(SMEM_BYTES <= 227 * 1024, "fits one SM's shared memory (sm_80: 163 KB)");
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; copies zeros when !pred (src-size 0), so padding needs no separate store.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Traps when the launcher gave less dynamic shared memory than the kernel's tile needs (the
// launcher's Spmm24Tile::smem_bytes disagrees with this file).
__device__ __forceinline__ void require_smem(int bytes) {
  uint32_t have;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(have));
  if (have < (uint32_t)bytes) __trap();
}

// Stores one m16n8 f32 accumulator fragment as bf16: c[0], c[1] at (row, col..col+1) and c[2],
// c[3] at (row + 8, col..col+1), rows past m and columns past n left alone (n % 8 == 0, so
// col < n means col + 1 < n too).
__device__ __forceinline__ void store_frag(__nv_bfloat16* __restrict__ y, int m, int n, int row,
                                           int col, const float* c) {
  if (col >= n) return;
  if (row < m)
    *reinterpret_cast<uint32_t*>(y + (size_t)row * n + col) = f32_to_bf16x2(c[0], c[1]);
  if (row + 8 < m)
    *reinterpret_cast<uint32_t*>(y + (size_t)(row + 8) * n + col) = f32_to_bf16x2(c[2], c[3]);
}

// Block (row block, column block) of this block, in grouped order: the hardware starts blocks in the
// order of their linear index, and consecutive indices walk down GROUP_M row blocks of one column
// block before moving right. A wave of resident blocks then covers about GROUP_M row blocks x
// (wave / GROUP_M) column blocks, whose W rows and X columns fit in L2 together, instead of a few row
// blocks x every column block (all of X streamed from DRAM once per wave).
constexpr int GROUP_M = 16;
__device__ __forceinline__ void block_coords(int& bm, int& bn) {
  const int gx = gridDim.x, gy = gridDim.y;
  const int id = blockIdx.y * gx + blockIdx.x;
  const int first = (id / (GROUP_M * gx)) * GROUP_M;
  const int rows = min(gy - first, GROUP_M);
  const int in = id % (GROUP_M * gx);
  bm = first + in % rows;
  bn = in / rows;
}

// One stage in shared memory: A fragments [MT_BLOCK][KT][32] uint4, metadata [MT_BLOCK][KT][16]
// u32, X rows [BK][B_STRIDE] bf16.
template <class C>
struct Stage {
  uint4* a;
  uint32_t* meta;
  __nv_bfloat16* b;
  __device__ __forceinline__ explicit Stage(unsigned char* base)
      : a(reinterpret_cast<uint4*>(base)),
        meta(reinterpret_cast<uint32_t*>(base + C::A_BYTES)),
        b(reinterpret_cast<__nv_bfloat16*>(base + C::A_BYTES + C::META_BYTES)) {}
};

// The copies of one thread, with their sources computed once: stage st reads fragment K tiles
// st*KT .. st*KT + KT - 1 of the block's rows and X rows st*BK .. st*BK + BK - 1 of its columns, so
// each source only moves by a fixed stride from one stage to the next.
template <class C>
struct Loader {
  static constexpr int A_PER = C::A_CHUNKS / THREADS, B_PER = C::B_CHUNKS / THREADS;
  const uint4* a_src[A_PER];
  int a_kt[A_PER];  // the chunk's K tile within a stage; -1: its A tile is past M
  int a_dst[A_PER];
  const uint32_t* m_src;
  int m_kt;  // likewise for the metadata chunk; -2: this thread copies no metadata
  const __nv_bfloat16* b_src[B_PER];
  int b_row[B_PER];  // the chunk's X row within a stage; a large value: its columns are past N
  int b_dst[B_PER];
  int ktiles, k;
  size_t b_stride;  // elements of X per stage

  __device__ __forceinline__ Loader(const uint4* __restrict__ vals,
                                    const uint32_t* __restrict__ meta,
                                    const __nv_bfloat16* __restrict__ x, int mt0, int mtiles,
                                    int ktiles_, int k_, int n, int n0)
      : ktiles(ktiles_), k(k_), b_stride((size_t)C::BK_ * n) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < A_PER; ++i) {
      const int c = tid + i * THREADS;
      const int mtl = c / (C::KT * 32), ktl = (c / 32) % C::KT, lane = c % 32;
      const int mt = mt0 + mtl;
      a_kt[i] = mt < mtiles ? ktl : -1;
      a_src[i] = vals + ((size_t)(mt < mtiles ? mt : 0) * ktiles + ktl) * 32 + lane;
      a_dst[i] = c;
    }
    m_kt = -2;
    m_src = meta;
    if (tid < C::META_WORDS / 4) {  // 4 chunks of 4 words per tile
      const int t = tid / 4, part = tid % 4;
      const int mt = mt0 + t / C::KT, ktl = t % C::KT;
      m_kt = mt < mtiles ? ktl : -1;
      m_src = meta + ((size_t)(mt < mtiles ? mt : 0) * ktiles + ktl) * 16 + part * 4;
    }
#pragma unroll
    for (int i = 0; i < B_PER; ++i) {
      const int c = tid + i * THREADS;
      int row = c / (C::COLS / 8), col = (c % (C::COLS / 8)) * 8;
      if (C::WGMMA) {
        // 32 consecutive chunks: 8 rows x 4 neighbouring 16-byte columns, i.e. 4 whole core
        // matrices (512 contiguous bytes of shared memory, no bank conflict); row by row the
        // same chunks would all hit banks 0-3 (core matrices are 128 bytes apart).
        const int q = c / 32, groups = C::COLS / 32;  // groups of 4 chunks per row
        row = (q / groups) * 8 + c % 8;
        col = ((q % groups) * 4 + (c / 8) % 4) * 8;
      }
      const int gn = n0 + col;
      b_row[i] = gn < n ? row : (1 << 30);
      b_src[i] = x + (gn < n ? (size_t)row * n + gn : 0);
      b_dst[i] = C::WGMMA ? ((row / 8) * (C::COLS / 8) + col / 8) * 64 + (row % 8) * 8
                          : row * C::B_STRIDE + col;
    }
  }

  __device__ __forceinline__ void load(Stage<C> s, int st) const {
    const int kt0 = st * C::KT;
#pragma unroll
    for (int i = 0; i < A_PER; ++i) {
      const bool ok = a_kt[i] >= 0 && kt0 + a_kt[i] < ktiles;
      cp_async16(&s.a[a_dst[i]], ok ? a_src[i] + (size_t)kt0 * 32 : a_src[i], ok);
    }
    if (m_kt != -2) {
      const bool ok = m_kt >= 0 && kt0 + m_kt < ktiles;
      cp_async16(&s.meta[threadIdx.x * 4], ok ? m_src + (size_t)kt0 * 16 : m_src, ok);
    }
    const int k0 = st * C::BK_;
#pragma unroll
    for (int i = 0; i < B_PER; ++i) {
      const bool ok = k0 + b_row[i] < k;
      cp_async16(&s.b[b_dst[i]], ok ? b_src[i] + (size_t)st * b_stride : b_src[i], ok);
    }
  }
};

template <int BN, int BK, int STAGES>
__device__ __forceinline__ void spmm_body(int m, int k, int n, const uint4* __restrict__ vals,
                                          const uint32_t* __restrict__ meta,
                                          const __nv_bfloat16* __restrict__ x,
                                          __nv_bfloat16* __restrict__ y) {
  using C = Tile<BN, BK, STAGES>;
  extern __shared__ __align__(128) unsigned char smem[];
  require_smem(C::SMEM_BYTES);
  const int mtiles = (m + 15) / 16, ktiles = (k + 31) / 32;
  const int nstages = (ktiles + C::KT - 1) / C::KT;
  int bm, bn;
  block_coords(bm, bn);
  const int m0 = bm * BM, n0 = bn * BN, mt0 = m0 / 16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;  // warp tile: rows wm*64.., cols wn*WN..
  const int g = lane >> 2, t = lane & 3;
  auto stage = [&](int i) { return Stage<C>(smem + i * C::STAGE_BYTES); };

  float acc[4][C::NJ][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < C::NJ; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

  const Loader<C> loader(vals, meta, x, mt0, mtiles, ktiles, k, n, n0);
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nstages) loader.load(stage(s), s);
    cp_async_commit();
  }

  for (int st = 0; st < nstages; ++st) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // stage st landed for every thread; stage st - 1 is no longer read
    const int pf = st + STAGES - 1;
    if (pf < nstages) loader.load(stage(pf % STAGES), pf);
    cp_async_commit();

    const Stage<C> s = stage(st % STAGES);
#pragma unroll
    for (int ktl = 0; ktl < C::KT; ++ktl) {
      // K tiles past the matrix were zero-filled, metadata included (code 0b0000 is not a valid
      // mma.sp code): skip them, block-uniformly.
      if (st * C::KT + ktl >= ktiles) break;
      uint32_t bfrag[C::NJ][4];
#pragma unroll
      for (int j = 0; j < C::NJ; ++j) {
        // matrix q = lane/8 covers K rows 8q..8q+7; this lane gives the address of row lane%8
        const __nv_bfloat16* p =
            &s.b[(ktl * 32 + 8 * (lane / 8) + (lane % 8)) * C::B_STRIDE + wn * C::WN + j * 8];
        asm volatile(
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
            : "=r"(bfrag[j][0]), "=r"(bfrag[j][1]), "=r"(bfrag[j][2]), "=r"(bfrag[j][3])
            : "r"(smem_addr(p)));
      }
      // all of this K tile's A fragments and metadata first, then the 4 x NJ products
      uint4 a[4];
      uint32_t e[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tile = (wm * 4 + i) * C::KT + ktl;
        a[i] = s.a[tile * 32 + lane];
        e[i] = s.meta[tile * 16 + 2 * g + (t & 1)];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // A tiles past M were zero-filled too: skip them (warp-uniform).
        if (mt0 + wm * 4 + i >= mtiles) continue;
#pragma unroll
        for (int j = 0; j < C::NJ; ++j) {
          asm volatile(
              "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
              "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, "
              "0x0;\n"
              : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
              : "r"(a[i].x), "r"(a[i].y), "r"(a[i].z), "r"(a[i].w), "r"(bfrag[j][0]),
                "r"(bfrag[j][1]), "r"(bfrag[j][2]), "r"(bfrag[j][3]), "r"(e[i]));
        }
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < C::NJ; ++j)
      store_frag(y, m, n, m0 + wm * 64 + i * 16 + g, n0 + wn * C::WN + j * 8 + 2 * t, acc[i][j]);
}

// ---------------------------------------------------------------------------------------------
// sm_90a: the same product through `wgmma.mma_async.sp` (Hopper's asynchronous warpgroup MMA).
// Each warpgroup (4 warps) owns 64 rows of the block's 128; A comes from registers in the fragment
// layout above (a warp's 16x32 tile is exactly one warp's quarter of the m64 A operand, and its
// metadata word is the warp's quarter of the m64 metadata), X from shared memory in the no-swizzle
// core-matrix layout (8 x 8 bf16 blocks of 128 bytes, N contiguous inside a block, "transposed"
// B): element (kk, c) of a stage at ((kk / 8) * (BN / 8) + c / 8) * 64 + (kk % 8) * 8 + c % 8.
// Descriptor: start >> 4, leading byte offset (between K groups of 8) BN * 16 bytes, stride byte
// offset (between N groups of 8) 128 bytes, no swizzle.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LOPPER_WGMMA 1
// D (m64 x n128 f32, 64 registers per thread) += A (m64 x k32 2:4, registers) * B (k32 x n128,
// shared memory through `desc`), metadata `e` (selector 0). The tensor cores read `a` and `e` after
// the instruction issues, until the matching wait (here: wait_group 0 right after the commit, with
// nothing in between).
__device__ __forceinline__ void wgmma_sp_n128(float (&d)[64], uint4& a, uint64_t desc,
                                              uint32_t& e) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
      "wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %69, %68, 0, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+r"(a.x), "+r"(a.y), "+r"(a.z), "+r"(a.w), "+r"(e)
      : "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

// Keeps the compiler from moving accesses of the accumulators across the wait above.
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ uint64_t b_desc(uint32_t smem, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((smem >> 4) & 0x3fff) | ((uint64_t)((lbo >> 4) & 0x3fff) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3fff) << 32);
}
#endif

template <int BN, int BK, int STAGES>
__device__ __forceinline__ void spmm_body_wgmma(int m, int k, int n, const uint4* __restrict__ vals,
                                                const uint32_t* __restrict__ meta,
                                                const __nv_bfloat16* __restrict__ x,
                                                __nv_bfloat16* __restrict__ y) {
#if defined(LOPPER_WGMMA)
  using C = Tile<BN, BK, STAGES, true>;
  static_assert(BN == 128, "one wgmma.sp shape, m64n128k32, is wrapped (wgmma_sp_n128)");
  extern __shared__ __align__(128) unsigned char smem[];
  require_smem(C::SMEM_BYTES);
  const int mtiles = (m + 15) / 16, ktiles = (k + 31) / 32;
  const int nstages = (ktiles + C::KT - 1) / C::KT;
  int bm, bn;
  block_coords(bm, bn);
  const int m0 = bm * BM, n0 = bn * BN, mt0 = m0 / 16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;  // warp w: A tile mt0 + w
  const int g = lane >> 2, t = lane & 3;
  const bool m_ok = mt0 + warp < mtiles;
  auto stage = [&](int i) { return Stage<C>(smem + i * C::STAGE_BYTES); };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;

  // Every stage waits for its own wgmma (wait_group 0) before the next barrier: A's registers and
  // the stage's buffer are then free. (Letting the wgmma run into the next stage, with A's registers
  // alternating between two sets, measured no faster on the H200, and nothing at the CUDA C++
  // level stops the compiler from reusing registers the tensor cores still read.)
  const Loader<C> loader(vals, meta, x, mt0, mtiles, ktiles, k, n, n0);
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nstages) loader.load(stage(s), s);
    cp_async_commit();
  }
  for (int st = 0; st < nstages; ++st) {
    cp_async_wait<STAGES - 2>();
    // cp.async wrote through the generic proxy; the tensor cores read through the async proxy
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();  // stage st landed for every thread; stage st - 1's wgmma is done everywhere
    const int pf = st + STAGES - 1;
    if (pf < nstages) loader.load(stage(pf % STAGES), pf);
    cp_async_commit();

    const Stage<C> s = stage(st % STAGES);
    uint4 a[C::KT];
    uint32_t e[C::KT];
#pragma unroll
    for (int ktl = 0; ktl < C::KT; ++ktl) {
      const int tile = warp * C::KT + ktl;
      a[ktl] = s.a[tile * 32 + lane];
      // zero-filled rows past M: valid pad metadata (positions 0 and 1) with zero values
      e[ktl] = m_ok ? s.meta[tile * 16 + 2 * g + (t & 1)] : S24_PAD_CODE * 0x11111111u;
    }
    const uint32_t b0 = smem_addr(s.b);
    wgmma_fence();
#pragma unroll
    for (int ktl = 0; ktl < C::KT; ++ktl) {
      if (st * C::KT + ktl >= ktiles) break;  // block-uniform: K tiles past the matrix
      const uint64_t desc = b_desc(b0 + ktl * 4 * (BN / 8) * 128, BN * 16, 128);
      wgmma_sp_n128(acc, a[ktl], desc, e[ktl]);
    }
    wgmma_commit();
    wgmma_wait0();
    fence_regs(acc);
  }
  cp_async_wait<0>();

  const int wg = warp / 4, w = warp % 4;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j)
    store_frag(y, m, n, m0 + wg * 64 + w * 16 + g, n0 + j * 8 + 2 * t, &acc[4 * j]);
#else
  __trap();  // built for an architecture without wgmma: the launcher only picks these on sm_90
#endif
}
}  // namespace

// Tile configurations (BN, BK, STAGES, blocks per SM for the register cap); the launcher in
// crates/lopper-cuda/src/sparse24.rs lists the same. BN = 128 tiles are capped at 128 registers so
// two blocks share an SM (the shared memory allows it up to 113 KB per block on sm_90); the
// 128-accumulator BN = 256 tiles get one block per SM and up to 255 registers.
// `cargo xtask kernels` reports registers and fails on spills.
// One wrapper per tile: KIND n (mma.sp, spmm_body) or w (wgmma.mma_async.sp, spmm_body_wgmma).
#define SPARSE24_SPMM(KIND, BODY, BN, BK, STAGES, MINB)                                       \
  extern "C" __global__ void __launch_bounds__(THREADS, MINB)                                  \
      sparse24_spmm_bf16_##KIND##BN##_k##BK##_s##STAGES(                                       \
          int m, int k, int n, const uint4* __restrict__ vals, const uint32_t* __restrict__ meta, \
          const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ y) {                \
    BODY<BN, BK, STAGES>(m, k, n, vals, meta, x, y);                                           \
  }

SPARSE24_SPMM(n, spmm_body, 128, 32, 3, 2)
SPARSE24_SPMM(n, spmm_body, 128, 64, 3, 2)
SPARSE24_SPMM(n, spmm_body, 128, 64, 4, 2)
SPARSE24_SPMM(n, spmm_body, 128, 128, 3, 1)
SPARSE24_SPMM(n, spmm_body, 256, 32, 4, 1)
SPARSE24_SPMM(n, spmm_body, 256, 64, 3, 1)

// wgmma tiles (sm_90a; a trap elsewhere): 2 warpgroups x 64 rows, 128 columns each. (A 256-wide
// tile measured no faster on the H200, 2026-11-30, and was dropped with its wrapper.)
SPARSE24_SPMM(w, spmm_body_wgmma, 128, 64, 3, 2)
SPARSE24_SPMM(w, spmm_body_wgmma, 128, 64, 4, 2)

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
// Variants (extern "C" names): sparse24_spmm_bf16_n<BN>_k<BK>_s<STAGES>, the tile configurations
//          listed at the bottom (each checked at compile time). Launch: 256 threads, grid
//          (ceil(N / BN), ceil(M / 128)), dynamic shared memory STAGES * stage bytes (the launcher
//          in crates/lopper-cuda/src/sparse24.rs computes the same; the kernel traps when it gets
//          less). Default n128_k64_s3: 0.55x cuBLAS bf16 at 8192^3 on an H200 with the tensor pipe
//          about half busy (docs/benchmarks.md, "GPU"). A wgmma.mma_async.sp path for sm_90a, the
//          route past cuBLAS, is not written.
// Min SM: 80.
#include "common.cuh"
#include "sparse24.cuh"

using namespace lopper;

namespace {
constexpr int BM = 128, THREADS = 256, WARPS_N = 4;
constexpr int MT_BLOCK = BM / 16;  // 8 A tiles per block per 32 of K

template <int BN, int BK, int STAGES>
struct Tile {
  static constexpr int COLS = BN;
  static constexpr int BK_ = BK;
  static constexpr int KT = BK / 32;            // fragment-layout K tiles per stage
  static constexpr int WN = BN / WARPS_N;       // warp tile columns
  static constexpr int NJ = WN / 8;             // mma.sp per A fragment per 32 of K
  static constexpr int B_STRIDE = BN + 8;       // bf16 per smem row of X (16-byte pad)
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
      const int row = c / (C::COLS / 8), col = (c % (C::COLS / 8)) * 8;
      const int gn = n0 + col;
      b_row[i] = gn < n ? row : (1 << 30);
      b_src[i] = x + (gn < n ? (size_t)row * n + gn : 0);
      b_dst[i] = row * C::B_STRIDE + col;
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
  extern __shared__ __align__(16) unsigned char smem[];
  {
    uint32_t have;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(have));
    if (have < (uint32_t)C::SMEM_BYTES) __trap();  // the launcher's size disagrees with this file
  }
  const int mtiles = (m + 15) / 16, ktiles = (k + 31) / 32;
  const int nstages = (ktiles + C::KT - 1) / C::KT;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN, mt0 = m0 / 16;
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
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < C::NJ; ++j) {
      const int col = n0 + wn * C::WN + j * 8 + 2 * t;
      const int row = m0 + wm * 64 + i * 16 + g;
      if (col < n) {  // n % 8 == 0, so col + 1 < n too
        if (row < m)
          *reinterpret_cast<uint32_t*>(y + (size_t)row * n + col) =
              f32_to_bf16x2(acc[i][j][0], acc[i][j][1]);
        if (row + 8 < m)
          *reinterpret_cast<uint32_t*>(y + (size_t)(row + 8) * n + col) =
              f32_to_bf16x2(acc[i][j][2], acc[i][j][3]);
      }
    }
  }
}
}  // namespace

// Tile configurations (BN, BK, STAGES, blocks per SM for the register cap); the launcher in
// crates/lopper-cuda/src/sparse24.rs lists the same. BN = 128 tiles are capped at 128 registers so
// two blocks share an SM (the shared memory allows it up to 113 KB per block on sm_90); the
// 128-accumulator BN = 256 tiles get one block per SM and up to 255 registers.
// `cargo xtask kernels` reports registers and fails on spills.
#define SPARSE24_SPMM(BN, BK, STAGES, MINB)                                                   \
  extern "C" __global__ void __launch_bounds__(THREADS, MINB)                                  \
      sparse24_spmm_bf16_n##BN##_k##BK##_s##STAGES(                                            \
          int m, int k, int n, const uint4* __restrict__ vals, const uint32_t* __restrict__ meta, \
          const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ y) {                \
    spmm_body<BN, BK, STAGES>(m, k, n, vals, meta, x, y);                                      \
  }

SPARSE24_SPMM(128, 32, 3, 2)
SPARSE24_SPMM(128, 64, 3, 2)
SPARSE24_SPMM(128, 64, 4, 2)
SPARSE24_SPMM(128, 128, 3, 1)
SPARSE24_SPMM(256, 32, 4, 1)
SPARSE24_SPMM(256, 64, 3, 1)

// sparse24_spmm: Y = W X with W 2:4 sparse (bf16, mma.sp fragment layout) and X, Y dense bf16.
//
// Maths:   Y[i, c] = sum_k W[i, k] X[k, c], f32 accumulation, Y rounded to bf16 once.
// Shapes:  W (M, K) 2:4 along K, X (K, N) row-major, Y (M, N) row-major; N % 8 == 0 (16-byte rows of
//          8 bf16 for cp.async), any M >= 1, any K % 4 == 0 (K is zero-padded to 32 in the layout).
// Buffers: vals [MT*KT*32] uint4 and meta [MT*KT*16] u32 in the layout of sparse24.cuh; X [K*N] bf16;
//          Y [M*N] bf16; all 16-byte aligned.
// Method:  tensor cores through `mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16`,
//          which multiplies a 16x32 2:4 tile (stored as 16x16 plus metadata) by a 32x8 tile: half the
//          multiply work of the dense m16n8k32. Block tile 128 (M) x 128 (N) x 32 (K), 8 warps as
//          2 (M) x 4 (N), each warp 64 x 32 = 4 x 4 mma.sp per K step, 64 f32 accumulators per thread.
//          A fragments, metadata and the X tile are copied global -> shared with cp.async in a
//          3-stage pipeline (one K tile loaded while two are in flight). A fragments are read back as
//          one 16-byte ld.shared per lane (the layout is already the register layout); X fragments
//          with ldmatrix.x4.trans from a row-padded tile (272-byte rows: conflict-free).
// Variants: sparse24_spmm_bf16 (this one). A wgmma.mma_async.sp path for sm_90a is not written.
// Min SM: 80.
#include "common.cuh"
#include "sparse24.cuh"

using namespace lopper;

namespace {
constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int MT_BLOCK = BM / 16;            // 8 A tiles per block per K step
constexpr int B_STRIDE = BN + 8;             // bf16 per smem row of X (16-byte pad)
constexpr int A_BYTES = MT_BLOCK * 32 * 16;  // 4096
constexpr int META_WORDS = MT_BLOCK * 16;    // 128 u32
constexpr int B_ELEMS = BK * B_STRIDE;       // 4352 bf16

struct __align__(16) Stage {
  uint4 a[MT_BLOCK * 32];
  uint32_t meta[META_WORDS];
  __nv_bfloat16 b[B_ELEMS];
};
static_assert(sizeof(Stage) == A_BYTES + META_WORDS * 4 + B_ELEMS * 2, "packed stage");

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

__device__ __forceinline__ void load_stage(Stage& s, const uint4* __restrict__ vals,
                                           const uint32_t* __restrict__ meta,
                                           const __nv_bfloat16* __restrict__ x, int mt0, int mtiles,
                                           int kt, int ktiles, int k, int n, int n0) {
  const int tid = threadIdx.x;
  {  // A: 8 tiles x 32 lanes x 16 bytes = 256 chunks, one per thread
    const int mt = mt0 + tid / 32, lane = tid % 32;
    const bool ok = mt < mtiles;
    const uint4* src = vals + ((size_t)(ok ? mt : 0) * ktiles + kt) * 32 + lane;
    cp_async16(&s.a[tid], src, ok);
  }
  if (tid < META_WORDS / 4) {  // metadata: 8 tiles x 16 words = 32 chunks of 4 words
    const int mt = mt0 + tid / 4, part = tid % 4;
    const bool ok = mt < mtiles;
    const uint32_t* src = meta + ((size_t)(ok ? mt : 0) * ktiles + kt) * 16 + part * 4;
    cp_async16(&s.meta[tid * 4], src, ok);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // X: 32 rows x 16 chunks of 8 bf16 = 512 chunks, two per thread
    const int c = tid + i * THREADS;
    const int row = c / 16, col = (c % 16) * 8;
    const int gk = kt * BK + row, gn = n0 + col;
    const bool ok = gk < k && gn < n;
    const __nv_bfloat16* src = x + (ok ? (size_t)gk * n + gn : 0);
    cp_async16(&s.b[row * B_STRIDE + col], src, ok);
  }
}
}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS)
    sparse24_spmm_bf16(int m, int k, int n, const uint4* __restrict__ vals,
                       const uint32_t* __restrict__ meta, const __nv_bfloat16* __restrict__ x,
                       __nv_bfloat16* __restrict__ y) {
  __shared__ Stage smem[STAGES];
  const int mtiles = (m + 15) / 16, ktiles = (k + BK - 1) / BK;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN, mt0 = m0 / 16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp / 4, wn = warp % 4;  // warp tile: rows wm*64.., cols wn*32..
  const int g = lane >> 2, t = lane & 3;

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < ktiles) load_stage(smem[s], vals, meta, x, mt0, mtiles, s, ktiles, k, n, n0);
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int pf = kt + STAGES - 1;
    if (pf < ktiles) load_stage(smem[pf % STAGES], vals, meta, x, mt0, mtiles, pf, ktiles, k, n, n0);
    cp_async_commit();

    const Stage& s = smem[kt % STAGES];
    uint32_t bfrag[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // matrix q = lane/8 covers K rows 8q..8q+7; this lane gives the address of row lane%8
      const __nv_bfloat16* p = &s.b[(8 * (lane / 8) + (lane % 8)) * B_STRIDE + wn * 32 + j * 8];
      asm volatile(
          "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
          : "=r"(bfrag[j][0]), "=r"(bfrag[j][1]), "=r"(bfrag[j][2]), "=r"(bfrag[j][3])
          : "r"(smem_addr(p)));
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // A tiles past M were zero-filled, metadata included: code 0b0000 is not a valid mma.sp
      // code, so skip them (warp-uniform) rather than feed it to the tensor cores.
      if (mt0 + wm * 4 + i >= mtiles) continue;
      const uint4 a = s.a[(wm * 4 + i) * 32 + lane];
      const uint32_t e = s.meta[(wm * 4 + i) * 16 + 2 * g + (t & 1)];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        asm volatile(
            "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
            : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
            : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(bfrag[j][0]), "r"(bfrag[j][1]),
              "r"(bfrag[j][2]), "r"(bfrag[j][3]), "r"(e));
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + wn * 32 + j * 8 + 2 * t;
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

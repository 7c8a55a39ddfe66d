// csr_spmm: Y = W X with W sparse (CSR) and X, Y dense row-major.
//
// Maths:   Y[i, c] = sum_{p in row i} values[p] * X[col_idx[p], c], accumulated in f32.
// Shapes:  W (M, K) with nnz entries, X (K, N), Y (M, N). Work: nnz * N multiply-adds.
// Buffers: row_order [M] i32 (a permutation of 0..M, rows sorted by length, longest first),
//          row_ptr [M+1] i32, col_idx [>= round_up(nnz, 4)] i32, values [>= round_up(nnz, 4)]
//          (f32 or bf16; the padding lets the last 16-byte index load stay inside the buffer),
//          X [K*N] and Y [M*N] of the same dtype as values. All buffers 16-byte aligned.
// Techniques (Sputnik, Gale et al. SC20):
//   - row swizzle: block b takes rows row_order[b*ROWS ..], so rows of similar length share a block
//     and the longest go first (load balance without a second kernel);
//   - subwarp tiling: a subwarp of SW lanes (8, 16 or 32) owns one row and SW*VEC columns, so short
//     rows and narrow N do not idle 32-lane warps;
//   - vector loads: each lane reads VEC columns of X (float4 for f32, 8 x bf16 = 16 bytes) and writes
//     VEC columns of Y; the row's indices and values are read 4 at a time (int4 / float4) from an
//     offset rounded down to a multiple of 4 (reverse-offset alignment), the entries before the row
//     start or after its end being ignored;
//   - the row's indices and values are staged in shared memory, SW*4 entries at a time, and every lane
//     of the subwarp reuses them from there.
// Variants (extern "C" names): csr_spmm_<dtype>_v<VEC>_sw<SW>, dtype f32 (VEC 1 or 4) and bf16 (VEC 1
//   or 8), SW 8, 16 or 32. VEC > 1 needs N % VEC == 0. Block: 128 threads (4 warps), launch bounds
//   (128, 8): up to 64 registers, 8 blocks per SM;
//   grid: (ceil(M / (4 * 32/SW)), ceil(N / (SW*VEC))).
// Min SM: 80.
#include "common.cuh"

using namespace lopper;

template <typename T, int VEC, int SW>
__device__ __forceinline__ void csr_spmm_body(int m, int n, const int* __restrict__ row_order,
                                              const int* __restrict__ row_ptr,
                                              const int* __restrict__ col_idx,
                                              const T* __restrict__ values,
                                              const T* __restrict__ x, T* __restrict__ y) {
  constexpr int WARPS = 4;
  constexpr int SUBS = 32 / SW;
  constexpr int ROWS = WARPS * SUBS;
  constexpr int STAGE = SW * 4;
  __shared__ int s_col[ROWS][STAGE];
  __shared__ float s_val[ROWS][STAGE];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / SW, sl = lane % SW;
  const int slot = warp * SUBS + sub;
  const int r = blockIdx.x * ROWS + slot;
  if (r >= m) return;  // whole subwarp leaves together: it shares r
  const unsigned mask = subwarp_mask<SW>(sub);
  const int row = __ldg(row_order + r);
  const int start = __ldg(row_ptr + row), end = __ldg(row_ptr + row + 1);
  const int c = (blockIdx.y * SW + sl) * VEC;
  const bool active = c < n;

  float acc[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) acc[v] = 0.0f;

  for (int base = start & ~3; base < end; base += STAGE) {
    const int idx = base + sl * 4;
    if (idx < end) {
      int4 ci = __ldg(reinterpret_cast<const int4*>(col_idx + idx));
      float w[4];
      load4(values + idx, w);
      s_col[slot][sl * 4 + 0] = ci.x;
      s_col[slot][sl * 4 + 1] = ci.y;
      s_col[slot][sl * 4 + 2] = ci.z;
      s_col[slot][sl * 4 + 3] = ci.w;
#pragma unroll
      for (int e = 0; e < 4; ++e) s_val[slot][sl * 4 + e] = w[e];
    }
    __syncwarp(mask);
    const int lo = max(start - base, 0), hi = min(end - base, STAGE);
    if (active) {
      int e = lo;
      // four entries at a time: four independent vector loads of X in flight before the FMAs
      for (; e + 4 <= hi; e += 4) {
        float wv[4], xv[4][VEC];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          wv[u] = s_val[slot][e + u];
          VecLoad<T, VEC>::load(x + (size_t)s_col[slot][e + u] * n + c, xv[u]);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[v] = fmaf(wv[u], xv[u][v], acc[v]);
      }
#pragma unroll 1
      for (; e < hi; ++e) {
        const float wv = s_val[slot][e];
        float xv[VEC];
        VecLoad<T, VEC>::load(x + (size_t)s_col[slot][e] * n + c, xv);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[v] = fmaf(wv, xv[v], acc[v]);
      }
    }
    __syncwarp(mask);
  }
  if (active) VecLoad<T, VEC>::store(y + (size_t)row * n + c, acc);
}

#define CSR_SPMM(NAME, T, VEC, SW)                                                            \
  extern "C" __global__ void __launch_bounds__(128, 8)                                         \
      NAME(int m, int n, const int* row_order, const int* row_ptr, const int* col_idx,        \
           const T* values, const T* x, T* y) {                                                \
    csr_spmm_body<T, VEC, SW>(m, n, row_order, row_ptr, col_idx, values, x, y);                \
  }

CSR_SPMM(csr_spmm_f32_v4_sw8, float, 4, 8)
CSR_SPMM(csr_spmm_f32_v4_sw16, float, 4, 16)
CSR_SPMM(csr_spmm_f32_v4_sw32, float, 4, 32)
CSR_SPMM(csr_spmm_f32_v1_sw8, float, 1, 8)
CSR_SPMM(csr_spmm_f32_v1_sw32, float, 1, 32)
CSR_SPMM(csr_spmm_bf16_v8_sw8, __nv_bfloat16, 8, 8)
CSR_SPMM(csr_spmm_bf16_v8_sw16, __nv_bfloat16, 8, 16)
CSR_SPMM(csr_spmm_bf16_v8_sw32, __nv_bfloat16, 8, 32)
CSR_SPMM(csr_spmm_bf16_v1_sw8, __nv_bfloat16, 1, 8)
CSR_SPMM(csr_spmm_bf16_v1_sw32, __nv_bfloat16, 1, 32)

// csr_sddmm: sampled dense-dense product, the weight gradient at a sparse pattern.
//
// Maths:   out[p] = sum_d A[i, d] * B[j, d] for each stored entry p = (i, j) of the CSR pattern,
//          accumulated in f32.
// Shapes:  pattern (M, K) with nnz entries; A (M, D), B (K, D) row-major; out [nnz] f32.
//          For y = x W^T: dW at the pattern = sddmm(W, A = dy^T (M, T), B = x^T (K, T)).
// Buffers: row_order [M] i32 (rows by length, longest first), row_ptr [M+1] i32, col_idx [nnz] i32,
//          A [M*D], B [K*D] (f32 or bf16), out [nnz] f32; 16-byte aligned.
// Method:  one warp per row (row swizzle as in csr_spmm); the warp reads 32 column indices at once
//          (one per lane, broadcast by shuffles), and for each entry the lanes split D into VEC-wide
//          vector loads (float4, or 8 x bf16) of A's row (L1-resident, reused by every entry) and B's
//          row, then reduce across the warp with 5 xor-shuffles. Two entries are dotted per pass for
//          independent loads in flight.
// Variants: csr_sddmm_<dtype>_v<VEC>: f32 v4 / v1, bf16 v8 / v1; VEC > 1 needs D % VEC == 0.
//          Block: 128 threads (4 rows); grid: ceil(M / 4).
// Min SM: 80.
#include "common.cuh"

using namespace lopper;

namespace {
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int VEC>
__device__ __forceinline__ void sddmm_body(int m, int d, const int* __restrict__ row_order,
                                           const int* __restrict__ row_ptr,
                                           const int* __restrict__ col_idx,
                                           const T* __restrict__ a, const T* __restrict__ b,
                                           float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int r = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (r >= m) return;  // whole warp
  const int row = __ldg(row_order + r);
  const int start = __ldg(row_ptr + row), end = __ldg(row_ptr + row + 1);
  const T* arow = a + (size_t)row * d;
  for (int base = start; base < end; base += 32) {
    const int cnt = min(32, end - base);
    const int mycol = lane < cnt ? __ldg(col_idx + base + lane) : 0;
    int e = 0;
    for (; e + 1 < cnt; e += 2) {
      const int j0 = __shfl_sync(0xffffffffu, mycol, e);
      const int j1 = __shfl_sync(0xffffffffu, mycol, e + 1);
      const T* b0 = b + (size_t)j0 * d;
      const T* b1 = b + (size_t)j1 * d;
      float s0 = 0.0f, s1 = 0.0f;
#pragma unroll 1
      for (int dd = lane * VEC; dd < d; dd += 32 * VEC) {
        float av[VEC], x0[VEC], x1[VEC];
        VecLoad<T, VEC>::load(arow + dd, av);
        VecLoad<T, VEC>::load(b0 + dd, x0);
        VecLoad<T, VEC>::load(b1 + dd, x1);
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          s0 = fmaf(av[v], x0[v], s0);
          s1 = fmaf(av[v], x1[v], s1);
        }
      }
      s0 = warp_sum(s0);
      s1 = warp_sum(s1);
      if (lane == 0) {
        out[base + e] = s0;
        out[base + e + 1] = s1;
      }
    }
    if (e < cnt) {
      const int j0 = __shfl_sync(0xffffffffu, mycol, e);
      const T* b0 = b + (size_t)j0 * d;
      float s0 = 0.0f;
#pragma unroll 1
      for (int dd = lane * VEC; dd < d; dd += 32 * VEC) {
        float av[VEC], x0[VEC];
        VecLoad<T, VEC>::load(arow + dd, av);
        VecLoad<T, VEC>::load(b0 + dd, x0);
#pragma unroll
        for (int v = 0; v < VEC; ++v) s0 = fmaf(av[v], x0[v], s0);
      }
      s0 = warp_sum(s0);
      if (lane == 0) out[base + e] = s0;
    }
  }
}
}  // namespace

#define CSR_SDDMM(NAME, T, VEC)                                                                \
  extern "C" __global__ void __launch_bounds__(128)                                             \
      NAME(int m, int d, const int* row_order, const int* row_ptr, const int* col_idx,         \
           const T* a, const T* b, float* out) {                                                \
    sddmm_body<T, VEC>(m, d, row_order, row_ptr, col_idx, a, b, out);                           \
  }

CSR_SDDMM(csr_sddmm_f32_v4, float, 4)
CSR_SDDMM(csr_sddmm_f32_v1, float, 1)
CSR_SDDMM(csr_sddmm_bf16_v8, __nv_bfloat16, 8)
CSR_SDDMM(csr_sddmm_bf16_v1, __nv_bfloat16, 1)

// elementwise: the per-entry kernels of sparse training.
//
// - mask_apply_<dtype>(n, mask, x): x[i] = mask[i] ? x[i] : 0 (mask: u8, 0 or 1).
// - masked_adamw_f32(n, w, g, m, v, mask, lr, beta1, beta2, eps, wd, bc1, bc2): decoupled AdamW on n
//   stored values; where mask != null and mask[i] == 0 the entry is pruned: w, m, v are set to 0.
//   Otherwise m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; w -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd w),
//   with bc1 = 1 - b1^t and bc2 = 1 - b2^t computed by the caller for step t. On CSR or 2:4 values
//   (the stored entries only) pass mask = null: work is proportional to nnz, not M*K.
// - gather_f32(n, perm, src, dst): dst[i] = src[perm[i]], the O(nnz) refresh of a CSR transpose's
//   values after the source's values changed (perm from CsrTranspose).
// Shapes: flat arrays of n entries. Block: 256 threads, grid-stride loops (any grid works).
// Min SM: 80.
#include "common.cuh"

using namespace lopper;

#define GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void mask_apply_f32(long long n, const uint8_t* __restrict__ mask,
                                          float* __restrict__ x) {
  GRID_STRIDE(i, n) {
    if (!mask[i]) x[i] = 0.0f;
  }
}

extern "C" __global__ void mask_apply_bf16(long long n, const uint8_t* __restrict__ mask,
                                           __nv_bfloat16* __restrict__ x) {
  GRID_STRIDE(i, n) {
    if (!mask[i]) x[i] = __float2bfloat16_rn(0.0f);
  }
}

extern "C" __global__ void masked_adamw_f32(long long n, float* __restrict__ w,
                                            const float* __restrict__ g, float* __restrict__ m,
                                            float* __restrict__ v,
                                            const uint8_t* __restrict__ mask, float lr,
                                            float beta1, float beta2, float eps, float wd,
                                            float bc1, float bc2) {
  GRID_STRIDE(i, n) {
    if (mask != nullptr && !mask[i]) {
      w[i] = 0.0f;
      m[i] = 0.0f;
      v[i] = 0.0f;
      continue;
    }
    const float gi = g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float wi = w[i];
    w[i] = wi - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * wi);
  }
}

extern "C" __global__ void gather_f32(long long n, const int* __restrict__ perm,
                                      const float* __restrict__ src, float* __restrict__ dst) {
  GRID_STRIDE(i, n) { dst[i] = __ldg(src + __ldg(perm + i)); }
}

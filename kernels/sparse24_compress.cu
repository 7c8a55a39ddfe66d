// sparse24_compress: 2:4 magnitude pruning and compression in one pass, dense bf16 -> the mma.sp
// fragment layout of sparse24.cuh (values + metadata), which sparse24_spmm reads directly.
//
// Maths:   for every row i and group g of 4 columns along K, keep the 2 entries of largest |W[i, k]|
//          (NaN counts as largest; ties go to the lower position), drop the other 2. The kept
//          positions (idx0 < idx1) form the 4-bit code idx0 | idx1 << 2.
// Shapes:  W (M, K) bf16 row-major, K % 4 == 0; M padded to 16 and K to 32 inside the layout with zero
//          values and code 0b0100.
// Buffers: w [M*K] bf16 (8-byte aligned rows: K % 4 == 0); vals [MT*KT*32] uint4; meta [MT*KT*16]
//          u32 (MT = ceil(M/16), KT = ceil(K/32)).
// Method:  one warp per 16x32 tile; lane 4g+t builds its own four A registers (rows g, g+8 x groups
//          t, t+4) and its codes; the quad ORs the codes together with two shuffles, and lanes t = 0, 1
//          write the two metadata words of row pair (g, g+8).
// Variants: sparse24_compress_bf16. Block: 128 threads (4 tiles); grid: ceil(MT*KT / 4).
// Min SM: 80.
#include "common.cuh"
#include "sparse24.cuh"

using namespace lopper;

namespace {
__device__ __forceinline__ float mag(float x) { return isnan(x) ? INFINITY : fabsf(x); }

// Keeps the two largest magnitudes of q[0..4]; returns the packed bf16 pair and the 4-bit code.
__device__ __forceinline__ uint32_t prune4(const float* q, uint32_t* code) {
  int i1 = 0;
#pragma unroll
  for (int p = 1; p < 4; ++p)
    if (mag(q[p]) > mag(q[i1])) i1 = p;
  int i2 = i1 == 0 ? 1 : 0;
#pragma unroll
  for (int p = 0; p < 4; ++p)
    if (p != i1 && p > i2 && mag(q[p]) > mag(q[i2])) i2 = p;
  const int lo = min(i1, i2), hi = max(i1, i2);
  *code = (uint32_t)lo | ((uint32_t)hi << 2);
  return f32_to_bf16x2(q[lo], q[hi]);
}
}  // namespace

extern "C" __global__ void __launch_bounds__(128)
    sparse24_compress_bf16(int m, int k, const __nv_bfloat16* __restrict__ w,
                           uint4* __restrict__ vals, uint32_t* __restrict__ meta) {
  const int mtiles = (m + 15) / 16, ktiles = (k + S24_TILE_K - 1) / S24_TILE_K;
  const int tile = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (tile >= mtiles * ktiles) return;  // the whole warp shares `tile`
  const int mt = tile / ktiles, kt = tile % ktiles;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  uint32_t reg[4], code[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = mt * 16 + g + 8 * (r & 1);
    const int grp = kt * 8 + t + 4 * (r >> 1);
    if (row < m && grp * 4 < k) {
      float q[4];
      load4(w + (size_t)row * k + grp * 4, q);
      reg[r] = prune4(q, &code[r]);
    } else {
      reg[r] = 0;
      code[r] = S24_PAD_CODE;
    }
  }
  vals[(size_t)tile * 32 + lane] = make_uint4(reg[0], reg[1], reg[2], reg[3]);

  uint32_t w0 = (code[0] << (4 * t)) | (code[1] << (16 + 4 * t));
  uint32_t w1 = (code[2] << (4 * t)) | (code[3] << (16 + 4 * t));
  w0 |= __shfl_xor_sync(0xffffffffu, w0, 1);
  w1 |= __shfl_xor_sync(0xffffffffu, w1, 1);
  w0 |= __shfl_xor_sync(0xffffffffu, w0, 2);
  w1 |= __shfl_xor_sync(0xffffffffu, w1, 2);
  if (t == 0) meta[(size_t)tile * 16 + 2 * g] = w0;
  if (t == 1) meta[(size_t)tile * 16 + 2 * g + 1] = w1;
}

// common.cuh: small helpers shared by lopper's kernels (bf16 conversions, vector types, warp masks).
// Header only; no kernels here. Min SM: 80 (bf16 conversions are native from sm_80).
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

namespace lopper {

// Scalar loads/stores through f32, so one template body serves f32 and bf16 storage.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Unpack a 32-bit word holding two bf16 (low half first) to two floats.
__device__ __forceinline__ float2 bf16x2_to_f32(uint32_t w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

// Pack two floats as bf16x2 (round to nearest even), low half = a.
__device__ __forceinline__ uint32_t f32_to_bf16x2(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Load VEC consecutive elements of T (16-byte aligned when VEC * sizeof(T) == 16) as floats.
template <typename T, int VEC> struct VecLoad;
template <> struct VecLoad<float, 1> {
  static __device__ __forceinline__ void load(const float* p, float* out) { out[0] = __ldg(p); }
  static __device__ __forceinline__ void store(float* p, const float* v) { p[0] = v[0]; }
};
template <> struct VecLoad<float, 4> {
  static __device__ __forceinline__ void load(const float* p, float* out) {
    float4 v = __ldg(reinterpret_cast<const float4*>(p));
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
  static __device__ __forceinline__ void store(float* p, const float* v) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
};
template <> struct VecLoad<__nv_bfloat16, 1> {
  static __device__ __forceinline__ void load(const __nv_bfloat16* p, float* out) {
    out[0] = __bfloat162float(p[0]);
  }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, const float* v) {
    p[0] = __float2bfloat16_rn(v[0]);
  }
};
template <> struct VecLoad<__nv_bfloat16, 8> {
  static __device__ __forceinline__ void load(const __nv_bfloat16* p, float* out) {
    uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    float2 a = bf16x2_to_f32(v.x), b = bf16x2_to_f32(v.y), c = bf16x2_to_f32(v.z),
           d = bf16x2_to_f32(v.w);
    out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
    out[4] = c.x; out[5] = c.y; out[6] = d.x; out[7] = d.y;
  }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, const float* v) {
    uint4 w = make_uint4(f32_to_bf16x2(v[0], v[1]), f32_to_bf16x2(v[2], v[3]),
                         f32_to_bf16x2(v[4], v[5]), f32_to_bf16x2(v[6], v[7]));
    *reinterpret_cast<uint4*>(p) = w;
  }
};

// Four consecutive stored values (16-byte aligned for f32, 8-byte for bf16) as floats.
__device__ __forceinline__ void load4(const float* p, float* out) {
  float4 v = __ldg(reinterpret_cast<const float4*>(p));
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float* out) {
  uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
  float2 a = bf16x2_to_f32(v.x), b = bf16x2_to_f32(v.y);
  out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
}

// The lanes of subwarp `sub` (SW lanes each) inside a warp.
template <int SW> __device__ __forceinline__ unsigned subwarp_mask(int sub) {
  return SW == 32 ? 0xffffffffu : (((1u << SW) - 1u) << (sub * SW));
}

}  // namespace lopper

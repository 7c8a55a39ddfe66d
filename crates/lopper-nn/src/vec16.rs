//! 16-lane (AVX-512) building blocks of the elementwise kernels, with explicit intrinsics: the
//! compiler's vectorization of the scalar formulas left part of the bit work scalar, or used a
//! full-precision divide where a reciprocal estimate and one Newton step give the same accuracy.
//! Every function here requires AVX-512F (callers check `kernels::has_avx512`).
use std::arch::x86_64::*;

/// [`crate::activation::fast_exp_with::<true>`] on 16 lanes, step for step (same bits; NaN in,
/// NaN out).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp16(x: __m512) -> __m512 {
    // the clamp with x second: max/min return their second operand when either is NaN, so a NaN
    // stays NaN (as in f32::clamp) instead of becoming e^-87
    let x = _mm512_min_ps(
        _mm512_set1_ps(88.0),
        _mm512_max_ps(_mm512_set1_ps(-87.0), x),
    );
    let magic = _mm512_set1_ps(12_582_912.0);
    let k = _mm512_sub_ps(
        _mm512_add_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            magic,
        ),
        magic,
    );
    let sign = _mm512_set1_epi32(i32::MIN);
    let nk = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(k), sign)); // -k
    let r = _mm512_fmadd_ps(
        nk,
        _mm512_set1_ps(1.428_606_8e-6),
        _mm512_fmadd_ps(nk, _mm512_set1_ps(0.693_145_75), x),
    );
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(c));
    }
    let e = _mm512_sub_epi32(
        _mm512_castps_si512(_mm512_add_ps(k, _mm512_set1_ps(127.0 + 8_388_608.0))),
        _mm512_set1_epi32(0x4B00_0000),
    );
    _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e)))
}

/// Lanes `0..n` of a 16-lane group (n <= 16).
#[inline]
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 }
}

/// `tanh(u)` as [`crate::activation::fast_tanh`] computes it, `1 - 2 / (e^(2u) + 1)`, with the
/// division replaced by a 14-bit reciprocal estimate and one Newton step (relative error about
/// 2^-27 before rounding, on `e^(2u) + 1 >= 1`; a full-precision `vdivps` of 16 lanes costs about
/// 10 cycles here).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn tanh16(u: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let y = _mm512_add_ps(exp16(_mm512_add_ps(u, u)), one);
    let r0 = _mm512_rcp14_ps(y);
    // r1 = r0 (2 - y r0), and the result 1 - 2 r1
    let r1 = _mm512_mul_ps(r0, _mm512_fnmadd_ps(y, r0, _mm512_set1_ps(2.0)));
    _mm512_fnmadd_ps(_mm512_set1_ps(2.0), r1, one)
}

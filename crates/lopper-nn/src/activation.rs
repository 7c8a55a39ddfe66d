//! Elementwise activations: GELU (tanh approximation, as GPT-2) and ReLU.
use crate::Result;
use crate::error::check_len;
use crate::kernels::has_avx2;
use lopper_tensor::Par;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;
const PAR_MIN: usize = 1 << 15;

/// `a * b + c`, fused (one rounding) in the clones compiled with FMA, separate elsewhere (a software
/// `fmaf` would crawl).
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` in f32 without libm (vectorizes): range reduction x = k ln2 + r, |r| <= ln2/2, degree-6
/// Taylor polynomial (relative error below 3e-7), clamped to [-87, 88].
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    fast_exp_with::<false>(x)
}

/// [`fast_exp`] with fused multiply-adds when `FMA` (for the clones compiled with FMA; the result
/// differs from [`fast_exp`]'s in the last bits).
#[inline(always)]
pub(crate) fn fast_exp_with<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest with the 1.5 * 2^23 trick (f32::round is a libm call without SSE4.1)
    let k = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = fmadd::<FMA>(-k, 1.428_606_8e-6, fmadd::<FMA>(-k, 0.693_145_75, x));
    let f = |c: f32, acc: f32| fmadd::<FMA>(r, acc, c);
    let p = f(
        1.0,
        f(
            1.0,
            f(
                0.5,
                f(1.0 / 6.0, f(1.0 / 24.0, f(1.0 / 120.0, 1.0 / 720.0))),
            ),
        ),
    );
    // 2^k from the bits of k + 127 + 2^23 (integer ops only; k + 127 is in 1..=254 after the clamp)
    let e = (k + (127.0 + 8_388_608.0))
        .to_bits()
        .wrapping_sub(0x4B00_0000);
    p * f32::from_bits(e << 23)
}

/// `tanh(u)` through [`fast_exp`]: `1 - 2 / (e^(2u) + 1)` (absolute error about 1e-7); libm's tanhf
/// was 40% of a GPT step.
#[inline(always)]
pub fn fast_tanh(u: f32) -> f32 {
    fast_tanh_with::<false>(u)
}

#[inline(always)]
fn fast_tanh_with<const FMA: bool>(u: f32) -> f32 {
    1.0 - 2.0 / (fast_exp_with::<FMA>(2.0 * u) + 1.0)
}

/// `out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, on the caller's thread.
pub fn gelu_forward(x: &[f32], out: &mut [f32]) -> Result<()> {
    gelu_forward_par(x, out, Par::Seq)
}

/// [`gelu_backward`] with explicit parallelism.
pub fn gelu_backward_par(x: &[f32], dout: &[f32], dx: &mut [f32], par: Par) -> Result<()> {
    gelu_backward_impl(x, dout, dx, par)
}

/// Elements per parallel task.
const CHUNK: usize = 8192;

#[inline(always)]
fn gelu_fwd_one<const FMA: bool>(v: f32) -> f32 {
    let u = SQRT_2_OVER_PI * fmadd::<FMA>(GELU_C * v * v, v, v);
    let h = 0.5 * v;
    fmadd::<FMA>(h, fast_tanh_with::<FMA>(u), h)
}

#[inline(always)]
fn gelu_bwd_one<const FMA: bool>(v: f32, g: f32) -> f32 {
    let v2 = v * v;
    let u = SQRT_2_OVER_PI * fmadd::<FMA>(GELU_C * v2, v, v);
    let t = fast_tanh_with::<FMA>(u);
    let sech2 = fmadd::<FMA>(-t, t, 1.0);
    let du = SQRT_2_OVER_PI * fmadd::<FMA>(3.0 * GELU_C, v2, 1.0);
    g * fmadd::<FMA>(0.5 * v * sech2, du, fmadd::<FMA>(0.5, t, 0.5))
}

/// Below this |x|, the backward from the forward's output takes tanh(u) = u (the error, u^3 / 3,
/// is below 2e-10 there) in the recomputing formula.
const FROM_Y_SMALL: f32 = 1e-3;

/// `gelu'(v) g` from the forward's output `y = v (1 + t) / 2`, t = tanh(u), without exp: with
/// `q = y / v = (1 + t) / 2` and `1 - t = 2 (v - y) / v`, `sech^2 = (1 - t)(1 + t) = 4 q (v - y) / v`,
/// so `gelu' = q + v sech^2 u' / 2 = q (1 + 2 (v - y) u')`. No difference of nearly equal numbers
/// is formed (`1 - t^2` from a t rounded near +-1, times the large `v u'`, was off by 4e-6 at
/// v = 6.8): `v - y` is exact where y is close to v. See [`gelu_backward_from_output`].
#[inline(always)]
fn gelu_bwd_y_one<const FMA: bool>(v: f32, y: f32, g: f32) -> f32 {
    let v2 = v * v;
    let du = SQRT_2_OVER_PI * fmadd::<FMA>(3.0 * GELU_C, v2, 1.0);
    if v.abs() < FROM_Y_SMALL {
        let t = SQRT_2_OVER_PI * fmadd::<FMA>(GELU_C * v2, v, v); // tanh(u) = u here
        let sech2 = fmadd::<FMA>(-t, t, 1.0);
        return g * fmadd::<FMA>(0.5 * v * sech2, du, fmadd::<FMA>(0.5, t, 0.5));
    }
    let q = y / v;
    g * (q * fmadd::<FMA>(2.0 * (v - y), du, 1.0))
}

#[inline(always)]
fn gelu_bwd_y_body<const FMA: bool>(x: &[f32], y: &[f32], dout: &[f32], dx: &mut [f32]) {
    for (((d, &v), &o), &g) in dx.iter_mut().zip(x).zip(y).zip(dout) {
        *d = gelu_bwd_y_one::<FMA>(v, o, g);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_bwd_y_avx2(x: &[f32], y: &[f32], dout: &[f32], dx: &mut [f32]) {
    gelu_bwd_y_body::<true>(x, y, dout, dx)
}

/// Elements per unrolled group: 4 independent 8-lane chains, so the out-of-order core overlaps
/// their long dependency chains (one chain per iteration measured 9 cycles per element; the
/// AVX-512 clone's two 16-lane chains measured as fast as four).
const UNROLL: usize = 32;

#[inline(always)]
fn gelu_fwd_body<const FMA: bool, const U: usize>(x: &[f32], out: &mut [f32]) {
    let (mut co, mut cx) = (out.chunks_exact_mut(U), x.chunks_exact(U));
    for (o, x) in (&mut co).zip(&mut cx) {
        for l in 0..U {
            o[l] = gelu_fwd_one::<FMA>(x[l]);
        }
    }
    for (o, &v) in co.into_remainder().iter_mut().zip(cx.remainder()) {
        *o = gelu_fwd_one::<FMA>(v);
    }
}

#[inline(always)]
fn gelu_bwd_body<const FMA: bool, const U: usize>(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    let mut cd = dx.chunks_exact_mut(U);
    let (mut cx, mut cg) = (x.chunks_exact(U), dout.chunks_exact(U));
    for ((d, x), g) in (&mut cd).zip(&mut cx).zip(&mut cg) {
        for l in 0..U {
            d[l] = gelu_bwd_one::<FMA>(x[l], g[l]);
        }
    }
    for ((d, &v), &g) in cd
        .into_remainder()
        .iter_mut()
        .zip(cx.remainder())
        .zip(cg.remainder())
    {
        *d = gelu_bwd_one::<FMA>(v, g);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_fwd_avx2(x: &[f32], out: &mut [f32]) {
    gelu_fwd_body::<true, UNROLL>(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_bwd_avx2(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    gelu_bwd_body::<true, UNROLL>(x, dout, dx)
}

/// GELU in 16 lanes with explicit intrinsics: the formulas of [`gelu_fwd_one`] and
/// [`gelu_bwd_one`] step for step, but tanh's division through [`crate::vec16::tanh16`]'s
/// reciprocal estimate (the compiler's clone spent about half its time in `vdivps`).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{GELU_C, SQRT_2_OVER_PI};
    use crate::vec16::{lanes, tanh16};
    use std::arch::x86_64::*;

    /// 16-lane groups per unrolled step: independent chains side by side (one group per step left
    /// the long exp/tanh chain exposed and ran slower than the compiler's two-group clone).
    const G: usize = 4;

    /// `f` on every element of `x` into `out` (same length): G groups per step, then masked groups.
    /// SAFETY: the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn map<F: Fn(__m512, __m512) -> __m512>(x: &[f32], y: &[f32], out: &mut [f32], f: F) {
        assert!(x.len() == out.len() && y.len() == out.len());
        let (px, py, po) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
        let n = x.len();
        let full = n - n % (16 * G);
        for i in (0..full).step_by(16 * G) {
            // SAFETY: i + 16 G <= n, so the G groups are elements of x, y and out.
            unsafe {
                let v: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(px.add(i + 16 * g)));
                let w: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(py.add(i + 16 * g)));
                let o: [__m512; G] = std::array::from_fn(|g| f(v[g], w[g]));
                for (g, o) in o.into_iter().enumerate() {
                    _mm512_storeu_ps(po.add(i + 16 * g), o);
                }
            }
        }
        for i in (full..n).step_by(16) {
            let m = lanes(n - i);
            // SAFETY: the lanes in m are elements i..min(i + 16, n) of x, y and out.
            unsafe {
                let (v, w) = (
                    _mm512_maskz_loadu_ps(m, px.add(i)),
                    _mm512_maskz_loadu_ps(m, py.add(i)),
                );
                _mm512_mask_storeu_ps(po.add(i), m, f(v, w));
            }
        }
    }

    /// See [`super::gelu_forward`]. SAFETY: the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_fwd(x: &[f32], out: &mut [f32]) {
        let (c, s, half) = (
            _mm512_set1_ps(GELU_C),
            _mm512_set1_ps(SQRT_2_OVER_PI),
            _mm512_set1_ps(0.5),
        );
        // SAFETY: the caller's contract (AVX-512F); x stands in for the unused second input.
        unsafe {
            map(x, x, out, |v, _| {
                let u = _mm512_mul_ps(
                    s,
                    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(c, v), v), v, v),
                );
                let h = _mm512_mul_ps(half, v);
                _mm512_fmadd_ps(h, tanh16(u), h)
            })
        }
    }

    /// See [`super::gelu_backward`]. SAFETY: the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_bwd(x: &[f32], dout: &[f32], dx: &mut [f32]) {
        let (c, s, half, one) = (
            _mm512_set1_ps(GELU_C),
            _mm512_set1_ps(SQRT_2_OVER_PI),
            _mm512_set1_ps(0.5),
            _mm512_set1_ps(1.0),
        );
        let c3 = _mm512_set1_ps(3.0 * GELU_C);
        // SAFETY: the caller's contract (AVX-512F).
        unsafe {
            map(x, dout, dx, |v, g| {
                let v2 = _mm512_mul_ps(v, v);
                let u = _mm512_mul_ps(s, _mm512_fmadd_ps(_mm512_mul_ps(c, v2), v, v));
                let t = tanh16(u);
                let sech2 = _mm512_fnmadd_ps(t, t, one);
                let du = _mm512_mul_ps(s, _mm512_fmadd_ps(c3, v2, one));
                let a = _mm512_mul_ps(_mm512_mul_ps(half, v), sech2);
                let d = _mm512_fmadd_ps(a, du, _mm512_fmadd_ps(half, t, half));
                _mm512_mul_ps(g, d)
            })
        }
    }

    /// See [`super::gelu_backward_from_output`]: [`super::gelu_bwd_y_one`] in 16 lanes, the
    /// division `y / x` through `rcp14` and one Newton step (both formulas computed, the small-x
    /// one blended in). SAFETY: the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_bwd_y(x: &[f32], y: &[f32], dout: &[f32], dx: &mut [f32]) {
        assert!(x.len() == dx.len() && y.len() == dx.len() && dout.len() == dx.len());
        let (c, s, half, one, two) = (
            _mm512_set1_ps(GELU_C),
            _mm512_set1_ps(SQRT_2_OVER_PI),
            _mm512_set1_ps(0.5),
            _mm512_set1_ps(1.0),
            _mm512_set1_ps(2.0),
        );
        let (c3, small) = (
            _mm512_set1_ps(3.0 * GELU_C),
            _mm512_set1_ps(super::FROM_Y_SMALL),
        );
        let f = |v: __m512, o: __m512, g: __m512| -> __m512 {
            let v2 = _mm512_mul_ps(v, v);
            let du = _mm512_mul_ps(s, _mm512_fmadd_ps(c3, v2, one));
            // q = y / v through rcp14 and one Newton step; gelu' = q (1 + 2 (v - y) u')
            let r0 = _mm512_rcp14_ps(v);
            let r1 = _mm512_mul_ps(r0, _mm512_fnmadd_ps(v, r0, two));
            let q = _mm512_mul_ps(o, r1);
            let d_y = _mm512_mul_ps(
                q,
                _mm512_fmadd_ps(_mm512_mul_ps(two, _mm512_sub_ps(v, o)), du, one),
            );
            // |v| < SMALL: the recomputing formula with tanh(u) = u (NaN compares false and takes
            // d_y, which is NaN)
            let t = _mm512_mul_ps(s, _mm512_fmadd_ps(_mm512_mul_ps(c, v2), v, v));
            let sech2 = _mm512_fnmadd_ps(t, t, one);
            let a = _mm512_mul_ps(_mm512_mul_ps(half, v), sech2);
            let d_t = _mm512_fmadd_ps(a, du, _mm512_fmadd_ps(half, t, half));
            let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v), small);
            _mm512_mul_ps(g, _mm512_mask_blend_ps(tiny, d_y, d_t))
        };
        let (px, py, pg, po) = (x.as_ptr(), y.as_ptr(), dout.as_ptr(), dx.as_mut_ptr());
        let n = x.len();
        let full = n - n % (16 * G);
        for i in (0..full).step_by(16 * G) {
            // SAFETY: i + 16 G <= n, so the G groups are elements of all four slices.
            unsafe {
                let o: [__m512; G] = std::array::from_fn(|k| {
                    let j = i + 16 * k;
                    f(
                        _mm512_loadu_ps(px.add(j)),
                        _mm512_loadu_ps(py.add(j)),
                        _mm512_loadu_ps(pg.add(j)),
                    )
                });
                for (k, o) in o.into_iter().enumerate() {
                    _mm512_storeu_ps(po.add(i + 16 * k), o);
                }
            }
        }
        for i in (full..n).step_by(16) {
            let m = lanes(n - i);
            // SAFETY: the lanes in m are elements i..min(i + 16, n) of all four slices.
            unsafe {
                let r = f(
                    _mm512_maskz_loadu_ps(m, px.add(i)),
                    _mm512_maskz_loadu_ps(m, py.add(i)),
                    _mm512_maskz_loadu_ps(m, pg.add(i)),
                );
                _mm512_mask_storeu_ps(po.add(i), m, r);
            }
        }
    }
}

/// One chunk, through the AVX2 clone when the CPU has it (8 lanes instead of SSE's 4).
fn gelu_fwd_chunk(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        unsafe { avx512::gelu_fwd(x, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { gelu_fwd_avx2(x, out) };
        return;
    }
    gelu_fwd_body::<false, UNROLL>(x, out)
}

fn gelu_bwd_chunk(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        unsafe { avx512::gelu_bwd(x, dout, dx) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { gelu_bwd_avx2(x, dout, dx) };
        return;
    }
    gelu_bwd_body::<false, UNROLL>(x, dout, dx)
}

/// [`gelu_forward`] with explicit parallelism (rayon over chunks when `par` has several threads and
/// the input is large).
pub fn gelu_forward_par(x: &[f32], out: &mut [f32], par: Par) -> Result<()> {
    check_len("gelu", "output", out.len(), x.len())?;
    if x.len() >= PAR_MIN && par.threads() > 1 {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| gelu_fwd_chunk(x, o));
    } else {
        gelu_fwd_chunk(x, out);
    }
    Ok(())
}

/// `dx = dout * gelu'(x)` (overwrites dx), on the caller's thread.
pub fn gelu_backward(x: &[f32], dout: &[f32], dx: &mut [f32]) -> Result<()> {
    gelu_backward_impl(x, dout, dx, Par::Seq)
}

fn gelu_backward_impl(x: &[f32], dout: &[f32], dx: &mut [f32], par: Par) -> Result<()> {
    check_len("gelu", "output gradient", dout.len(), x.len())?;
    check_len("gelu", "input gradient", dx.len(), x.len())?;
    if x.len() >= PAR_MIN && par.threads() > 1 {
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(dout.par_chunks(CHUNK))
            .for_each(|((d, x), g)| gelu_bwd_chunk(x, g, d));
    } else {
        gelu_bwd_chunk(x, dout, dx);
    }
    Ok(())
}

/// `dx = dout * gelu'(x)` (overwrites dx) from the forward's output `y = GELU(x)` as
/// [`gelu_forward`] computed it: `gelu'(x) = q (1 + 2 (x - y) u')` with `q = y / x = (1 + t) / 2`
/// (for |x| < 1e-3, the usual formula with tanh(u) = u), so tanh, and its exp, are not recomputed. The recomputing backward was
/// compute-bound at about 1.4 ns per element on one core here, with its inputs in L1. `y` must be
/// f32 GELU output (a bf16-rounded y would carry its rounding into t); the result agrees with
/// [`gelu_backward`] within a few f32 ulps of the derivative. Splits over `par`'s threads like
/// [`gelu_backward_par`].
pub fn gelu_backward_from_output(
    x: &[f32],
    y: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    par: Par,
) -> Result<()> {
    check_len("gelu", "output", y.len(), x.len())?;
    check_len("gelu", "output gradient", dout.len(), x.len())?;
    check_len("gelu", "input gradient", dx.len(), x.len())?;
    let chunk = |x: &[f32], y: &[f32], g: &[f32], d: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { avx512::gelu_bwd_y(x, y, g, d) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { gelu_bwd_y_avx2(x, y, g, d) };
            return;
        }
        gelu_bwd_y_body::<false>(x, y, g, d)
    };
    if x.len() >= PAR_MIN && par.threads() > 1 {
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(y.par_chunks(CHUNK))
            .zip(dout.par_chunks(CHUNK))
            .for_each(|(((d, x), y), g)| chunk(x, y, g, d));
    } else {
        chunk(x, y, dout, dx);
    }
    Ok(())
}

/// `out = max(x, 0)`.
pub fn relu_forward(x: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("relu", "output", out.len(), x.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
    Ok(())
}

/// `dx = dout * [x > 0]` (overwrites dx).
pub fn relu_backward(x: &[f32], dout: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("relu", "output gradient", dout.len(), x.len())?;
    check_len("relu", "input gradient", dx.len(), x.len())?;
    for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dout) {
        *d = if v > 0.0 { g } else { 0.0 };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu64(x: f64) -> (f64, f64) {
        let (s, c) = (SQRT_2_OVER_PI as f64, GELU_C as f64);
        let u = s * (x + c * x * x * x);
        let t = u.tanh();
        let du = s * (1.0 + 3.0 * c * x * x);
        (
            0.5 * x * (1.0 + t),
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
        )
    }

    /// Every clone this CPU can run (portable, AVX2+FMA, AVX-512) against GELU and its derivative in
    /// f64, over [-12, 12] and past fast_exp's clamp.
    #[test]
    fn gelu_clones_match_f64() {
        let mut x: Vec<f32> = (0..4801).map(|i| -12.0 + i as f32 * 0.005).collect();
        x.extend([-100.0, -50.0, -9.5, 9.5, 50.0, 100.0, 1e-6, -1e-6, 0.0]);
        let g = vec![1.0f32; x.len()];
        let mut runs: Vec<(&str, Vec<f32>, Vec<f32>)> = Vec::new();
        let (mut f, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_fwd_body::<false, UNROLL>(&x, &mut f);
        gelu_bwd_body::<false, UNROLL>(&x, &g, &mut b);
        runs.push(("portable", f.clone(), b.clone()));
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { gelu_fwd_avx2(&x, &mut f) };
            // SAFETY: as above.
            unsafe { gelu_bwd_avx2(&x, &g, &mut b) };
            runs.push(("avx2", f.clone(), b.clone()));
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
            unsafe { avx512::gelu_fwd(&x, &mut f) };
            // SAFETY: as above.
            unsafe { avx512::gelu_bwd(&x, &g, &mut b) };
            runs.push(("avx512", f.clone(), b.clone()));
        }
        for (name, f, b) in &runs {
            for (i, &v) in x.iter().enumerate() {
                let (wf, wb) = gelu64(v as f64);
                let tf = 1e-6 * (1.0 + wf.abs()); // measured max 3.7e-7
                // measured max 1.9e-6, where 1 + tanh(u) cancels in f32 (x < -4): the derivative's true
                // value there is below 1e-5 and comes out as 0
                let tb = 3e-6 * (1.0 + wb.abs());
                assert!(
                    (f[i] as f64 - wf).abs() <= tf,
                    "{name} gelu({v}) = {}, want {wf}",
                    f[i]
                );
                assert!(
                    (b[i] as f64 - wb).abs() <= tb,
                    "{name} gelu'({v}) = {}, want {wb}",
                    b[i]
                );
            }
        }
    }

    /// The backward from the forward's output, every clone, against the f64 derivative (the same
    /// tolerance as the recomputing backward) and against that backward, on the grid above plus
    /// the switch at |x| = 1e-3, tiny and huge inputs, with random upstream gradients; NaN stays
    /// NaN; lengths that end inside a 16-lane group; the threaded split; length errors.
    #[test]
    fn gelu_backward_from_output_matches_the_recomputing_backward() {
        let mut x: Vec<f32> = (0..4801).map(|i| -12.0 + i as f32 * 0.005).collect();
        x.extend([
            -100.0, -50.0, -9.5, 9.5, 50.0, 100.0, 1e-6, -1e-6, 0.0, -0.0,
        ]);
        x.extend([
            1e-3, -1e-3, 0.999e-3, 1.001e-3, -1.001e-3, 1e-30, -1e-38, 3.0e38,
        ]);
        let g: Vec<f32> = (0..x.len())
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let mut y = vec![0.0; x.len()];
        gelu_forward(&x, &mut y).unwrap();
        let mut want = vec![0.0; x.len()];
        gelu_backward(&x, &g, &mut want).unwrap();
        let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
        let mut b = vec![0.0; x.len()];
        // y as each clone's own forward computed it
        let mut yf = vec![0.0; x.len()];
        gelu_fwd_body::<false, UNROLL>(&x, &mut yf);
        gelu_bwd_y_body::<false>(&x, &yf, &g, &mut b);
        runs.push(("portable", b.clone()));
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { gelu_fwd_avx2(&x, &mut yf) };
            // SAFETY: as above.
            unsafe { gelu_bwd_y_avx2(&x, &yf, &g, &mut b) };
            runs.push(("avx2", b.clone()));
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
            unsafe { avx512::gelu_fwd(&x, &mut yf) };
            // SAFETY: as above.
            unsafe { avx512::gelu_bwd_y(&x, &yf, &g, &mut b) };
            runs.push(("avx512", b.clone()));
        }
        for (name, b) in &runs {
            for (i, &v) in x.iter().enumerate() {
                let (_, wb) = gelu64(v as f64);
                let gi = g[i] as f64;
                let tol = 3e-6 * (1.0 + wb.abs()) * gi.abs().max(1e-30);
                let got = b[i] as f64;
                if !v.is_finite() || v.abs() > 1e30 {
                    continue; // 3e38: 0.5 x (1 + t) overflows in both backwards alike
                }
                assert!(
                    (got - wb * gi).abs() <= tol,
                    "{name} gelu'({v}) * {gi} = {got}, want {}",
                    wb * gi
                );
                let old = want[i] as f64;
                assert!(
                    (got - old).abs() <= 2.0 * tol,
                    "{name} at {v}: {got} vs the recomputing backward's {old}"
                );
            }
        }
        // NaN in, NaN out, on every length's tail
        for n in [1, 15, 16, 17, 64, 65] {
            let mut xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
            xs[n - 1] = f32::NAN;
            let mut ys = vec![0.0; n];
            gelu_forward(&xs, &mut ys).unwrap();
            let (gs, mut out) = (vec![1.0; n], vec![0.0; n]);
            gelu_backward_from_output(&xs, &ys, &gs, &mut out, Par::Seq).unwrap();
            assert!(out[n - 1].is_nan(), "n={n}");
            let mut want = vec![0.0; n];
            gelu_backward(&xs[..n - 1], &gs[..n - 1], &mut want[..n - 1]).unwrap();
            for i in 0..n - 1 {
                assert!((out[i] - want[i]).abs() <= 1e-5, "n={n} i={i}");
            }
        }
        // the threaded split gives the same bits as one thread
        let big: Vec<f32> = (0..3 * PAR_MIN + 5)
            .map(|i| (i % 977) as f32 / 100.0 - 5.0)
            .collect();
        let mut yb = vec![0.0; big.len()];
        gelu_forward(&big, &mut yb).unwrap();
        let gb = vec![0.5; big.len()];
        let (mut one, mut two) = (vec![0.0; big.len()], vec![0.0; big.len()]);
        gelu_backward_from_output(&big, &yb, &gb, &mut one, Par::Seq).unwrap();
        gelu_backward_from_output(&big, &yb, &gb, &mut two, Par::Rayon(2)).unwrap();
        assert_eq!(one, two);
        // a short y, dout or dx: an error naming it
        let e = gelu_backward_from_output(&big, &yb[1..], &gb, &mut one, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("output"), "{e}");
        let e = gelu_backward_from_output(&big, &yb, &gb, &mut one[1..], Par::Seq).unwrap_err();
        assert!(e.to_string().contains("input gradient"), "{e}");
    }
}

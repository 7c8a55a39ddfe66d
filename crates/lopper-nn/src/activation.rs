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
}

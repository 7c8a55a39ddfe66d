//! Elementwise activations: GELU (tanh approximation, as GPT-2) and ReLU.
use crate::Result;
use crate::error::check_len;
use lopper_tensor::Par;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;
const PAR_MIN: usize = 1 << 15;

/// `e^x` in f32 without libm (vectorizes): range reduction x = k ln2 + r, |r| <= ln2/2, degree-6
/// Taylor polynomial (relative error below 3e-7), clamped to [-87, 88].
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest with the 1.5 * 2^23 trick (f32::round is a libm call without SSE4.1)
    let k = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
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
    1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0)
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
fn gelu_fwd_one(v: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    0.5 * v * (1.0 + fast_tanh(u))
}

#[inline(always)]
fn gelu_bwd_one(v: f32, g: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    let t = fast_tanh(u);
    let sech2 = 1.0 - t * t;
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
    g * (0.5 * (1.0 + t) + 0.5 * v * sech2 * du)
}

/// Elements per unrolled group: 4 independent 8-lane chains, so the out-of-order core overlaps
/// their long dependency chains (one chain per iteration measured 9 cycles per element).
const UNROLL: usize = 32;

#[inline(always)]
fn gelu_fwd_body(x: &[f32], out: &mut [f32]) {
    let (mut co, mut cx) = (out.chunks_exact_mut(UNROLL), x.chunks_exact(UNROLL));
    for (o, x) in (&mut co).zip(&mut cx) {
        for l in 0..UNROLL {
            o[l] = gelu_fwd_one(x[l]);
        }
    }
    for (o, &v) in co.into_remainder().iter_mut().zip(cx.remainder()) {
        *o = gelu_fwd_one(v);
    }
}

#[inline(always)]
fn gelu_bwd_body(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    let mut cd = dx.chunks_exact_mut(UNROLL);
    let (mut cx, mut cg) = (x.chunks_exact(UNROLL), dout.chunks_exact(UNROLL));
    for ((d, x), g) in (&mut cd).zip(&mut cx).zip(&mut cg) {
        for l in 0..UNROLL {
            d[l] = gelu_bwd_one(x[l], g[l]);
        }
    }
    for ((d, &v), &g) in cd
        .into_remainder()
        .iter_mut()
        .zip(cx.remainder())
        .zip(cg.remainder())
    {
        *d = gelu_bwd_one(v, g);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn gelu_fwd_avx512(x: &[f32], out: &mut [f32]) {
    gelu_fwd_body(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn gelu_bwd_avx512(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    gelu_bwd_body(x, dout, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_fwd_avx2(x: &[f32], out: &mut [f32]) {
    gelu_fwd_body(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_bwd_avx2(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    gelu_bwd_body(x, dout, dx)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One chunk, through the AVX2 clone when the CPU has it (8 lanes instead of SSE's 4).
fn gelu_fwd_chunk(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        unsafe { gelu_fwd_avx512(x, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { gelu_fwd_avx2(x, out) };
        return;
    }
    gelu_fwd_body(x, out)
}

fn gelu_bwd_chunk(x: &[f32], dout: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
        unsafe { gelu_bwd_avx512(x, dout, dx) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { gelu_bwd_avx2(x, dout, dx) };
        return;
    }
    gelu_bwd_body(x, dout, dx)
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

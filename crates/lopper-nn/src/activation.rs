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
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
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

/// [`gelu_forward`] with explicit parallelism (rayon over chunks when `par` has several threads and
/// the input is large).
pub fn gelu_forward_par(x: &[f32], out: &mut [f32], par: Par) -> Result<()> {
    check_len("gelu", "output", out.len(), x.len())?;
    let f = |(o, &v): (&mut f32, &f32)| {
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        *o = 0.5 * v * (1.0 + fast_tanh(u));
    };
    if x.len() >= PAR_MIN && par.threads() > 1 {
        out.par_iter_mut()
            .zip(x.par_iter())
            .with_min_len(4096)
            .for_each(f);
    } else {
        out.iter_mut().zip(x).for_each(f);
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
    let f = |((d, &v), &g): ((&mut f32, &f32), &f32)| {
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        let t = fast_tanh(u);
        let sech2 = 1.0 - t * t;
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
        *d = g * (0.5 * (1.0 + t) + 0.5 * v * sech2 * du);
    };
    if x.len() >= PAR_MIN && par.threads() > 1 {
        dx.par_iter_mut()
            .zip(x.par_iter())
            .zip(dout.par_iter())
            .with_min_len(4096)
            .for_each(f);
    } else {
        dx.iter_mut().zip(x).zip(dout).for_each(f);
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

//! Mixed precision: bf16 storage of weights and saved activations, f32 accumulation.
//!
//! With [`Precision::Bf16`] a [`crate::Linear`] rounds its weight to bf16 at each forward (the f32
//! master stays what the optimizer updates), saves its input as bf16 (half the bytes of f32) for the
//! backward, and rounds its outputs and input gradients to bf16 values. Products widen the bf16
//! operands to f32 and accumulate in f32 (faer has no bf16 GEMM; this CPU has no bf16 FMA unit
//! outside AVX-512 BF16, which it lacks), so on the CPU bf16 costs conversions and saves memory, not
//! time.
use lopper_tensor::bf16;

/// Storage precision of weights and saved activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything f32 (the default).
    #[default]
    F32,
    /// bf16 weight copies and saved activations, f32 accumulation and f32 master weights.
    Bf16,
}

/// bf16 bits of `x`, rounded to nearest even (NaN stays a quiet NaN).
#[inline(always)]
fn to_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// `dst[i] = bf16(src[i])`, round to nearest even.
pub(crate) fn round_into(src: &[f32], dst: &mut Vec<bf16>) {
    dst.clear();
    dst.extend(src.iter().map(|&x| bf16::from_bits(to_bits(x))));
}

/// `dst = f32(src)` (exact).
pub(crate) fn widen_into(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}

/// `x = f32(bf16(x))` in place: the values a bf16 store and load would give.
pub(crate) fn round_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = f32::from_bits((to_bits(*v) as u32) << 16);
    }
}

/// `dst = f32(bf16(src))`.
pub(crate) fn round_copy(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((to_bits(s) as u32) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_half() {
        let xs = [
            0.0f32,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // a tie: rounds to even
            1.0 + 3.0 / 256.0,
            std::f32::consts::PI,
            -std::f32::consts::E,
            1e-40,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut b = Vec::new();
        round_into(&xs, &mut b);
        for (x, r) in xs.iter().zip(&b) {
            assert_eq!(r.to_bits(), bf16::from_f32(*x).to_bits(), "{x}");
        }
        let mut w = vec![0.0; xs.len()];
        widen_into(&b, &mut w);
        let mut c = xs.to_vec();
        round_in_place(&mut c);
        assert_eq!(w, c);
        let mut n = [f32::NAN];
        round_in_place(&mut n);
        assert!(n[0].is_nan());
    }
}

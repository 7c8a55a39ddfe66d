//! Small helpers: resizing scratch buffers, deterministic init, `y += x`.
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Resizes `v` to `n` (only grows capacity once; contents unspecified).
pub(crate) fn ensure(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        v.resize(n, 0.0);
    }
}

/// A slice of `n` elements of `v` that starts on a 64-byte boundary (`v` grows to hold the offset;
/// contents unspecified). The sparse kernels read such an operand in place instead of copying it into
/// an aligned slab.
pub(crate) fn aligned(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n + 15 {
        v.resize(n + 15, 0.0);
    }
    let off = (16 - (v.as_ptr() as usize / 4) % 16) % 16;
    &mut v[off..off + n]
}

/// The slice [`aligned`] returned for the same `v` and `n` (`v` unchanged since).
pub(crate) fn aligned_ref(v: &[f32], n: usize) -> &[f32] {
    let off = (16 - (v.as_ptr() as usize / 4) % 16) % 16;
    &v[off.min(v.len())..(off + n).min(v.len())]
}

/// `n` samples of N(0, std^2), deterministic in `seed`.
pub(crate) fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std.max(0.0)).expect("std >= 0");
    (0..n).map(|_| d.sample(&mut r)).collect()
}

/// `y += x`.
#[inline]
pub(crate) fn add_into(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// `dw[perm[q]] += g[q]`: a gradient in a `CsrTranspose`'s order added to the source's (`perm` is
/// the transpose's permutation, as long as `dw` and `g`; checked by the callers).
pub(crate) fn add_transposed(dw: &mut [f32], perm: &[u32], g: &[f32]) {
    debug_assert!(perm.len() == dw.len() && g.len() == dw.len());
    for (&p, &g) in perm.iter().zip(g) {
        dw[p as usize] += g;
    }
}

/// The AVX2+FMA and AVX-512 clones of one body: `fn $avx2` and `fn $avx512`, both with the given
/// signature and the same `$call` (the body, inlined into each clone's target features). Callers
/// check the CPU (`kernels::has_avx2`, `has_avx512`) before calling a clone (they are unsafe to call).
macro_rules! simd_clones {
    ($avx2:ident, $avx512:ident: fn($($a:ident : $t:ty),* $(,)?) => $call:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2($($a: $t),*) {
            $call
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $avx512($($a: $t),*) {
            $call
        }
    };
}
pub(crate) use simd_clones;

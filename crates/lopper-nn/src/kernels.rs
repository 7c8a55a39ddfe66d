//! Small CPU kernels of the training step: an AVX2 8x8-tile transpose, row-split GEMMs on one
//! thread pool, vectorized softmax rows and row sums. Everything falls back to portable code when
//! the CPU lacks AVX2+FMA.
use crate::Result;
use crate::activation::fast_exp_with;
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm_with};
use rayon::prelude::*;

/// Whether the CPU has AVX2 and FMA (checked once by std's cache).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX-512F (with AVX2 and FMA), unless `LOPPER_ISA=avx2` asks for AVX2
/// (e.g. under valgrind, which does not run AVX-512).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && has_avx2()
                && std::env::var("LOPPER_ISA").map_or(true, |v| v != "avx2")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Elements below which a transpose stays on the caller's thread.
const TRANSPOSE_PAR_MIN: usize = 1 << 16;

/// `dst (cols, rows) = src (rows, cols)^T`, in 64x64 blocks of 8x8 AVX2 tiles, split over dst row
/// blocks on rayon when `par` has several threads and the matrix is large.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], par: Par) {
    debug_assert_eq!(src.len(), rows * cols);
    debug_assert_eq!(dst.len(), rows * cols);
    const B: usize = 64;
    if rows == 0 || cols == 0 {
        return;
    }
    // dst rows j0..j0+B (src columns) per task; each task reads src[:, j0..j1].
    let task = |j0: usize, out: &mut [f32]| {
        let j1 = (j0 + out.len() / rows).min(cols);
        transpose_block(src, rows, cols, j0, j1, out);
    };
    if rows * cols >= TRANSPOSE_PAR_MIN && par.threads() > 1 {
        dst.par_chunks_mut(B * rows)
            .enumerate()
            .for_each(|(b, out)| task(b * B, out));
    } else {
        for (b, out) in dst.chunks_mut(B * rows).enumerate() {
            task(b * B, out);
        }
    }
}

/// `out ((j1 - j0), rows) = src[:, j0..j1]^T`, in 64-row blocks of 8x8 tiles (power-of-two
/// strides make this memory-bound: 1024x1024 measured ~3 ms, 1024x256 ~0.2 ms).
fn transpose_block(src: &[f32], rows: usize, cols: usize, j0: usize, j1: usize, out: &mut [f32]) {
    let w = j1 - j0;
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.is_multiple_of(8) {
        const R: usize = 64;
        let full = rows - rows % 8;
        while i < full {
            let ie = (i + R).min(full);
            for jj in (0..w).step_by(8) {
                for ii in (i..ie).step_by(8) {
                    // SAFETY: AVX2 is present (checked above); the 8x8 tile at (ii, j0 + jj) of
                    // src and at (jj, ii) of out are in bounds: ii + 8 <= rows,
                    // j0 + jj + 8 <= j1 <= cols, jj + 8 <= w, and out has w rows of `rows`.
                    unsafe {
                        tile8(
                            src.as_ptr().add(ii * cols + j0 + jj),
                            cols,
                            out.as_mut_ptr().add(jj * rows + ii),
                            rows,
                        )
                    };
                }
            }
            i = ie;
        }
    }
    // remaining rows (and everything without AVX2)
    for r in i..rows {
        let s = &src[r * cols + j0..r * cols + j1];
        for (c, &v) in s.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
}

/// 8x8 transpose of the tile at `s` (row stride `ss`) into `d` (row stride `ds`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile8(s: *const f32, ss: usize, d: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 8 rows of 8 readable floats at s and 8 rows of 8 writable at d.
    unsafe {
        let r0 = _mm256_loadu_ps(s);
        let r1 = _mm256_loadu_ps(s.add(ss));
        let r2 = _mm256_loadu_ps(s.add(2 * ss));
        let r3 = _mm256_loadu_ps(s.add(3 * ss));
        let r4 = _mm256_loadu_ps(s.add(4 * ss));
        let r5 = _mm256_loadu_ps(s.add(5 * ss));
        let r6 = _mm256_loadu_ps(s.add(6 * ss));
        let r7 = _mm256_loadu_ps(s.add(7 * ss));
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        _mm256_storeu_ps(d, _mm256_permute2f128_ps::<0x20>(u0, u4));
        _mm256_storeu_ps(d.add(ds), _mm256_permute2f128_ps::<0x20>(u1, u5));
        _mm256_storeu_ps(d.add(2 * ds), _mm256_permute2f128_ps::<0x20>(u2, u6));
        _mm256_storeu_ps(d.add(3 * ds), _mm256_permute2f128_ps::<0x20>(u3, u7));
        _mm256_storeu_ps(d.add(4 * ds), _mm256_permute2f128_ps::<0x31>(u0, u4));
        _mm256_storeu_ps(d.add(5 * ds), _mm256_permute2f128_ps::<0x31>(u1, u5));
        _mm256_storeu_ps(d.add(6 * ds), _mm256_permute2f128_ps::<0x31>(u2, u6));
        _mm256_storeu_ps(d.add(7 * ds), _mm256_permute2f128_ps::<0x31>(u3, u7));
    }
}

/// How a Linear runs its products on several threads: [`lopper_tensor::GemmSplit`] (`Slabs`, the
/// default, or faer's own pool `Faer`).
pub use lopper_tensor::GemmSplit as GemmThreads;

/// `C (m, n) = alpha A (m, k) op(B) + beta C`, A not transposed, all row-major and contiguous.
/// Through [`lopper_tensor::gemm_with`]: with `GemmThreads::Slabs` and `par` of t > 1 threads,
/// C's columns or rows are split into t slabs run as single-threaded GEMMs on rayon; with
/// `GemmThreads::Faer`, one faer call on faer's own pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_nx(
    c: &mut [f32],
    a: &[f32],
    b: MatRef<'_>,
    tb: Transpose,
    m: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    par: Par,
    how: GemmThreads,
) -> Result<()> {
    gemm_rows(c, a, b, tb, (m, k), alpha, beta, None, par, how)
}

/// [`gemm_nx`] with `beta = 1` on C's rows first set to `bias` (n), each slab by its own thread:
/// `C = A op(B) + 1 bias^T`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_nx_bias(
    c: &mut [f32],
    a: &[f32],
    b: MatRef<'_>,
    tb: Transpose,
    m: usize,
    k: usize,
    bias: &[f32],
    par: Par,
    how: GemmThreads,
) -> Result<()> {
    gemm_rows(c, a, b, tb, (m, k), 1.0, 1.0, Some(bias), par, how)
}

#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    c: &mut [f32],
    a: &[f32],
    b: MatRef<'_>,
    tb: Transpose,
    (m, k): (usize, usize),
    alpha: f32,
    beta: f32,
    init: Option<&[f32]>,
    par: Par,
    how: GemmThreads,
) -> Result<()> {
    let n = match tb {
        Transpose::No => b.cols(),
        Transpose::Yes => b.rows(),
    };
    let (cm, am) = (MatMut::new(c, m, n)?, MatRef::new(a, m, k)?);
    Ok(gemm_with(
        cm,
        am,
        Transpose::No,
        b,
        tb,
        alpha,
        beta,
        init,
        par,
        how,
    )?)
}

/// `out[i] += sum_j a[i, j]` for a (rows, cols) row-major.
pub(crate) fn add_row_sums(a: &[f32], cols: usize, out: &mut [f32]) {
    if cols == 0 {
        return; // empty rows sum to 0
    }
    for (o, r) in out.iter_mut().zip(a.chunks_exact(cols)) {
        *o += sum(r);
    }
}

/// [`add_row_sums`] split over `par`'s threads by ranges of rows when there are several and `a` is
/// large (each row's sum is the same as on one thread).
pub(crate) fn add_row_sums_par(a: &[f32], cols: usize, out: &mut [f32], par: Par) {
    let threads = par.threads();
    if threads > 1 && cols > 0 && a.len() >= 1 << 14 && out.len() >= 2 {
        let rows = out.len().div_ceil(threads);
        out.par_chunks_mut(rows)
            .zip(a.par_chunks(rows * cols))
            .for_each(|(o, a)| add_row_sums(a, cols, o));
    } else {
        add_row_sums(a, cols, out);
    }
}

/// Sum with 8 independent accumulators (vectorizes).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ch = x.chunks_exact(8);
    let rem = ch.remainder();
    for c in ch {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rem.iter().sum::<f32>()
}

/// Max with 8 independent lanes (vectorizes to maxps).
#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let ch = x.chunks_exact(8);
    let rem = ch.remainder();
    for c in ch {
        for l in 0..8 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(rem) {
        m = if v > m { v } else { m };
    }
    m
}

#[inline(always)]
fn softmax_body<const FMA: bool>(r: &mut [f32], len: usize) {
    let (head, tail) = r.split_at_mut(len);
    let mx = max8(head);
    let mut acc = [0.0f32; 8];
    let mut ch = head.chunks_exact_mut(8);
    for c in &mut ch {
        for l in 0..8 {
            c[l] = fast_exp_with::<FMA>(c[l] - mx);
            acc[l] += c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for x in ch.into_remainder() {
        *x = fast_exp_with::<FMA>(*x - mx);
        s += *x;
    }
    let inv = 1.0 / s;
    head.iter_mut().for_each(|x| *x *= inv);
    tail.fill(0.0);
}

#[inline(always)]
fn softmax_backward_body(a: &[f32], d: &mut [f32], len: usize) {
    let (dh, dt) = d.split_at_mut(len);
    let ah = &a[..len];
    let mut acc = [0.0f32; 8];
    let (ca, cd) = (ah.chunks_exact(8), dh.chunks_exact(8));
    let (ra, rd) = (ca.remainder(), cd.remainder());
    for (x, y) in ca.zip(cd) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let dot = acc.iter().sum::<f32>() + ra.iter().zip(rd).map(|(x, y)| x * y).sum::<f32>();
    for (y, &x) in dh.iter_mut().zip(ah) {
        *y = x * (*y - dot);
    }
    dt.fill(0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(r: &mut [f32], len: usize) {
    softmax_body::<true>(r, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_backward_avx2(a: &[f32], d: &mut [f32], len: usize) {
    softmax_backward_body(a, d, len)
}

/// `r[..len] = softmax(r[..len])` (through [`crate::activation::fast_exp`], with FMA in the AVX2
/// and AVX-512 versions), `r[len..] = 0`. `1 <= len <= r.len()`.
pub(crate) fn softmax_row(r: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { avx512::softmax_row(r, len) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { softmax_avx2(r, len) };
        return;
    }
    softmax_body::<false>(r, len)
}

/// Softmax backward of one row: `d[j] = a[j] (d[j] - sum_{i < len} a[i] d[i])` for `j < len`,
/// `d[len..] = 0` (a: the probabilities, d: their gradient in, the logits' gradient out).
pub(crate) fn softmax_backward_row(a: &[f32], d: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { avx512::softmax_backward_row(a, d, len) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { softmax_backward_avx2(a, d, len) };
        return;
    }
    softmax_backward_body(a, d, len)
}

/// Softmax rows in 16 lanes with explicit intrinsics: the compiler's vectorization of the 8-lane
/// arrays above left most of [`fast_exp_with`]'s bit work scalar (the softmax was 3.5% of a sparse
/// GPT step). The tail of a row goes through masked loads and stores.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::vec16::{exp16, lanes};
    use std::arch::x86_64::*;

    /// See [`super::softmax_row`]. SAFETY: the CPU has AVX-512F; `1 <= len <= r.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_row(r: &mut [f32], len: usize) {
        assert!(len >= 1 && len <= r.len());
        let p = r.as_mut_ptr();
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in (0..len).step_by(16) {
            let m = lanes(len - c);
            // SAFETY: the lanes in m are elements c..min(c + 16, len) of r.
            let v = unsafe { _mm512_mask_loadu_ps(mx, m, p.add(c)) };
            mx = _mm512_max_ps(mx, v);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for c in (0..len).step_by(16) {
            let m = lanes(len - c);
            // SAFETY: as above; the store writes the same lanes.
            unsafe {
                let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(c)), mx));
                _mm512_mask_storeu_ps(p.add(c), m, e);
                sum = _mm512_mask_add_ps(sum, m, sum, e);
            }
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for c in (0..len).step_by(16) {
            let m = lanes(len - c);
            // SAFETY: as above.
            unsafe {
                _mm512_mask_storeu_ps(
                    p.add(c),
                    m,
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(c)), inv),
                )
            };
        }
        r[len..].fill(0.0);
    }

    /// See [`super::softmax_backward_row`]. SAFETY: the CPU has AVX-512F; `len <= a.len()` and
    /// `len <= d.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_backward_row(a: &[f32], d: &mut [f32], len: usize) {
        assert!(len <= a.len() && len <= d.len());
        let (pa, pd) = (a.as_ptr(), d.as_mut_ptr());
        let mut dot = _mm512_setzero_ps();
        for c in (0..len).step_by(16) {
            let m = lanes(len - c);
            // SAFETY: the lanes in m are elements c..min(c + 16, len) of a and d.
            unsafe {
                dot = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, pa.add(c)),
                    _mm512_maskz_loadu_ps(m, pd.add(c)),
                    dot,
                );
            }
        }
        let dot = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
        for c in (0..len).step_by(16) {
            let m = lanes(len - c);
            // SAFETY: as above; the store writes the same lanes.
            unsafe {
                let (x, y) = (
                    _mm512_maskz_loadu_ps(m, pa.add(c)),
                    _mm512_maskz_loadu_ps(m, pd.add(c)),
                );
                _mm512_mask_storeu_ps(pd.add(c), m, _mm512_mul_ps(x, _mm512_sub_ps(y, dot)));
            }
        }
        d[len..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_row_sums_par_equals_one_thread() {
        for (rows, cols) in [(0, 4), (1, 1), (5, 0), (3, 7), (257, 64), (1000, 129)] {
            let a: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37) % 101) as f32 / 7.0 - 6.0)
                .collect();
            let start: Vec<f32> = (0..rows).map(|i| i as f32 * 0.25).collect();
            let mut want = start.clone();
            for (i, w) in want.iter_mut().enumerate() {
                *w += sum(&a[i * cols..(i + 1) * cols]);
            }
            for par in [Par::Seq, Par::Rayon(2), Par::Rayon(3)] {
                let mut out = start.clone();
                add_row_sums_par(&a, cols, &mut out, par);
                assert_eq!(out, want, "{rows}x{cols} {par:?}");
            }
        }
    }

    #[test]
    fn transpose_matches_naive_on_awkward_shapes() {
        for (r, c) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (9, 17),
            (33, 70),
            (64, 40),
            (300, 257),
            (128, 96),
            (1024, 48),
        ] {
            for par in [Par::Seq, Par::Rayon(2)] {
                let a: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
                let mut t = vec![0.0; r * c];
                transpose(&a, r, c, &mut t, par);
                for i in 0..r {
                    for j in 0..c {
                        assert_eq!(t[j * r + i], a[i * c + j], "{r}x{c} at ({i}, {j})");
                    }
                }
            }
        }
    }

    /// The 16-lane exp gives the scalar FMA exp's bits, over its whole range and past its clamp.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp16_matches_the_scalar_exp() {
        if !has_avx512() {
            return;
        }
        let mut x: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.01).collect();
        x.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            f32::MAX,
            f32::MIN,
            87.9,
            -86.9,
            f32::NAN,
        ]);
        x.resize(x.len().next_multiple_of(16), 0.5);
        for c in x.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: the CPU has AVX-512F (checked above); c and got hold 16 floats.
            unsafe {
                use std::arch::x86_64::*;
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    crate::vec16::exp16(_mm512_loadu_ps(c.as_ptr())),
                );
            }
            for (g, &v) in got.iter().zip(c) {
                let want = crate::activation::fast_exp_with::<true>(v);
                if v.is_nan() {
                    assert!(g.is_nan() && want.is_nan(), "exp(NaN): {g} vs {want}");
                } else {
                    assert_eq!(g.to_bits(), want.to_bits(), "exp({v}): {g} vs {want}");
                }
            }
        }
    }

    /// Each version this CPU runs (portable, AVX2, AVX-512) against the definition, with rows that
    /// end inside a 16-lane group, on one lane, and on a group's edge.
    #[test]
    fn softmax_rows_match_the_definition() {
        type Fwd = fn(&mut [f32], usize);
        type Bwd = fn(&[f32], &mut [f32], usize);
        let mut versions: Vec<(&str, Fwd, Bwd)> = vec![
            ("portable", softmax_body::<false>, softmax_backward_body),
            ("dispatched", softmax_row, softmax_backward_row),
        ];
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY (both): only called when the CPU has AVX2 and FMA (checked just above).
            versions.push((
                "avx2",
                |r, len| unsafe { softmax_avx2(r, len) },
                |a, d, len| unsafe { softmax_backward_avx2(a, d, len) },
            ));
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY (both): only called when the CPU has AVX-512F (checked just above).
            versions.push((
                "avx512",
                |r, len| unsafe { avx512::softmax_row(r, len) },
                |a, d, len| unsafe { avx512::softmax_backward_row(a, d, len) },
            ));
        }
        for (name, fwd, bwd) in versions {
            softmax_version_matches(name, fwd, bwd);
        }
    }

    fn softmax_version_matches(
        name: &str,
        softmax_row: fn(&mut [f32], usize),
        softmax_backward_row: fn(&[f32], &mut [f32], usize),
    ) {
        let shapes = [
            (1, 1),
            (5, 3),
            (16, 16),
            (17, 17),
            (40, 33),
            (128, 100),
            (300, 256),
        ];
        for (n, len) in shapes {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let mut r = x.clone();
            softmax_row(&mut r, len);
            let mx = x[..len].iter().copied().fold(f32::MIN, f32::max);
            let z: f32 = x[..len].iter().map(|v| (v - mx).exp()).sum();
            for j in 0..n {
                let want = if j < len { (x[j] - mx).exp() / z } else { 0.0 };
                assert!(
                    (r[j] - want).abs() < 1e-6,
                    "{name} {n} {len} {j}: {} vs {want}",
                    r[j]
                );
            }
            // a NaN logit makes the row NaN (a training run must see it, not lose it in the max or
            // the exp's clamp), wherever it sits in a 16-lane group
            for at in [0, len / 2, len - 1] {
                let mut bad = x.clone();
                bad[at] = f32::NAN;
                softmax_row(&mut bad, len);
                assert!(
                    bad[..len].iter().all(|v| v.is_nan()),
                    "{name} {len}: NaN at {at} lost: {bad:?}"
                );
            }
            let mut d: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
            let d0 = d.clone();
            softmax_backward_row(&r, &mut d, len);
            let dot: f32 = (0..len).map(|i| r[i] * d0[i]).sum();
            for j in 0..n {
                let want = if j < len { r[j] * (d0[j] - dot) } else { 0.0 };
                assert!((d[j] - want).abs() < 1e-5, "{name} {j}: {} vs {want}", d[j]);
            }
        }
    }

    #[test]
    fn slab_gemm_matches_one_faer_call() {
        let (m, k, n) = (301, 37, 29);
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let mut c1 = vec![0.5; m * n];
        let mut c2 = c1.clone();
        let bm = MatRef::new(&b, n, k).unwrap();
        gemm_nx(
            &mut c1,
            &a,
            bm,
            Transpose::Yes,
            m,
            k,
            0.5,
            1.0,
            Par::Seq,
            GemmThreads::Faer,
        )
        .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            gemm_nx(
                &mut c2,
                &a,
                bm,
                Transpose::Yes,
                m,
                k,
                0.5,
                1.0,
                Par::rayon(),
                GemmThreads::Slabs,
            )
            .unwrap()
        });
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}

//! `sddmm`: sampled dense-dense product, the weight gradient at W's pattern.
//!
//! For each stored entry p = (i, j) of the pattern: `out[p] = A[i, :] . B[j, :]`.
//! Shapes: pattern (M, K), A (M, D), B (K, D), out (nnz). For a Linear layer y = x W^T with
//! x (T, K) and dy (T, M): dW at the pattern is sddmm(W, dy^T, x^T), i.e. A = dy^T (M, T) and
//! B = x^T (K, T). Work: nnz * D multiply-adds instead of M * K * D.
//! With D at least one block per thread, each task takes a contiguous run of D's blocks over all
//! rows into its own copy of `out` (summed at the end); otherwise each task owns a chunk of rows (so
//! a contiguous range of `out`), one task per thread. D is walked in blocks of [`D_BLOCK`]: the task
//! reads B's block from an aligned packed slab (B's own row stride, often 4 KiB, would map every row
//! onto the same few cache sets), and on AVX-512 it holds row i's block of A in eight registers and
//! dots it with eight entries' rows of B at once: one load per multiply-add, and the eight sums
//! reduced together (a transposed tree) instead of one by one.
//! Elsewhere (and for D's last, narrower block) four entries are dotted against one load of A.
use super::grid::{SyncPtr, balanced_rows, call_key, par_for_work, run_grid, with_packed};
use super::simd::{Isa, fmadd, isa, multiversion};
use crate::error::{check_nnz, shape_err};
use crate::{Csr, Result};
use lopper_tensor::{MatRef, Par};

/// Length of the D blocks: 128 f32, eight AVX-512 registers of A's row.
pub(super) const D_BLOCK: usize = 128;
const _: () = assert!(D_BLOCK.is_multiple_of(16), "whole 16-lane vectors");

thread_local! {
    static PARTIAL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[p] = a[i, :] . b[j, :]` for each stored entry p = (i, j) of `pattern` (its values are not
/// read). A (M, D), B (K, D), out has nnz elements and is overwritten.
pub fn sddmm(pattern: &Csr, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], par: Par) -> Result<()> {
    check(pattern, &a, &b, out)?;
    out.fill(0.0);
    add_products(pattern, a, b, out, par);
    Ok(())
}

/// `out[p] += a[i, :] . b[j, :]`: [`sddmm`] accumulated into `out` (a weight gradient summed over
/// batches or panels: no zeroed buffer and no second pass to add it).
pub fn sddmm_add(
    pattern: &Csr,
    a: MatRef<'_>,
    b: MatRef<'_>,
    out: &mut [f32],
    par: Par,
) -> Result<()> {
    check(pattern, &a, &b, out)?;
    add_products(pattern, a, b, out, par);
    Ok(())
}

fn check(pattern: &Csr, a: &MatRef<'_>, b: &MatRef<'_>, out: &[f32]) -> Result<()> {
    if a.rows() != pattern.rows() || b.rows() != pattern.cols() || a.cols() != b.cols() {
        return Err(shape_err(
            "sddmm",
            format!(
                "pattern is {}x{}, A is {}x{}, B is {}x{} (need A: M x D, B: K x D)",
                pattern.rows(),
                pattern.cols(),
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols()
            ),
        ));
    }
    check_nnz("sddmm", "out", out.len(), pattern.nnz())
}

/// `out += ` the products of [`sddmm_add`] (shapes checked).
fn add_products(pattern: &Csr, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], par: Par) {
    let d = a.cols();
    if d == 0 || pattern.nnz() == 0 {
        return;
    }
    let rp = pattern.row_ptr();
    let (ci, ad, bd, k, nnz) = (
        pattern.col_idx(),
        a.data(),
        b.data(),
        pattern.cols(),
        pattern.nnz(),
    );
    let key = call_key();
    let par = par_for_work(par, nnz.saturating_mul(d));
    let threads = par.threads().max(1);
    let blocks = d.div_ceil(D_BLOCK);
    if threads > 1 && blocks >= threads {
        // Split D: each task takes a contiguous run of D blocks over all rows (equal work; each
        // block of B is packed once) into its own copy of out, summed afterwards.
        let per = blocks.div_ceil(threads) * D_BLOCK;
        let parts: Vec<_> = (0..d.div_ceil(per))
            .map(|t| t * per..((t + 1) * per).min(d))
            .collect();
        // the partial outputs live in a buffer kept per calling thread (taken out while in use, so a
        // nested call on this thread just gets an empty one)
        let mut partial = PARTIAL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        partial.clear();
        partial.resize(nnz * (parts.len() - 1), 0.0);
        let (op, pp) = (SyncPtr(out.as_mut_ptr()), SyncPtr(partial.as_mut_ptr()));
        run_grid(par, &[0..pattern.rows()], &parts, |r, c| {
            let t = c.start / per;
            // SAFETY: task t alone writes its nnz-long output: `out` for t = 0, else the
            // (t - 1)-th nnz-long part of `partial`, which holds parts.len() - 1 of them.
            let o = if t == 0 {
                op
            } else {
                unsafe { pp.add((t - 1) * nnz) }
            };
            for d0 in c.step_by(D_BLOCK) {
                let d1 = (d0 + D_BLOCK).min(d);
                with_packed(bd, k, d, d0, d1, key, false, None, |slab| {
                    sddmm_task(rp, ci, ad, slab, d, d0, d1, o, r.start, r.end)
                });
            }
        });
        for part in partial.chunks_exact(nnz) {
            for (o, p) in out.iter_mut().zip(part) {
                *o += p;
            }
        }
        PARTIAL.with(|p| *p.borrow_mut() = partial);
        return;
    }
    // Split rows, one task per thread: each task packs every block of B.
    let rows = balanced_rows(pattern.rows(), threads, |i| (rp[i + 1] - rp[i]) + 1);
    let op = SyncPtr(out.as_mut_ptr());
    run_grid(par, &rows, &[0..d], |r, _| {
        for d0 in (0..d).step_by(D_BLOCK) {
            let d1 = (d0 + D_BLOCK).min(d);
            with_packed(bd, k, d, d0, d1, key, false, None, |slab| {
                sddmm_task(rp, ci, ad, slab, d, d0, d1, op, r.start, r.end)
            });
        }
    });
}

multiversion!(fn sddmm_task(rp: &[usize], ci: &[u32], a: &[f32], slab: &[f32], d: usize, d0: usize,
                            d1: usize, out: SyncPtr, r0: usize, r1: usize) => sddmm_body);

/// Rows r0..r1, D's columns d0..d1: `out[p] += A[i, d0..d1] . slab[j]` where `slab` is
/// `B[:, d0..d1]` packed with row stride `d1 - d0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sddmm_body<const FMA: bool>(
    rp: &[usize],
    ci: &[u32],
    a: &[f32],
    slab: &[f32],
    d: usize,
    d0: usize,
    d1: usize,
    out: SyncPtr,
    r0: usize,
    r1: usize,
) {
    // SAFETY: entries rp[r0]..rp[r1] of `out` belong to this task's rows alone.
    let out = unsafe { std::slice::from_raw_parts_mut(out.0.add(rp[r0]), rp[r1] - rp[r0]) };
    let base = rp[r0];
    let w = d1 - d0;
    // AVX-512 rows over the block's whole registers (up to 8: a full 128-wide block), the portable
    // loop over the 1..15 columns after them, or over all of a block narrower than one register
    let vw = if FMA && isa() == Isa::Avx512 {
        w / 16 * 16
    } else {
        0
    };
    debug_assert!(w <= D_BLOCK);
    for i in r0..r1 {
        let arow = &a[i * d + d0..i * d + d1];
        let (s, e) = (rp[i], rp[i + 1]);
        let cols = &ci[s..e];
        let o = &mut out[s - base..e - base];
        let mut c = 0; // the columns c..w left to the portable loop
        #[cfg(target_arch = "x86_64")]
        if vw > 0 {
            let av = &arow[..vw];
            // SAFETY: vw > 0 implies the CPU has AVX-512F (isa() checked it); av has vw = 16 V
            // elements and every slab row read has w >= vw elements (j < K).
            unsafe {
                match vw / 16 {
                    8 => avx512::row::<8>(av, slab, w, cols, o),
                    7 => avx512::row::<7>(av, slab, w, cols, o),
                    6 => avx512::row::<6>(av, slab, w, cols, o),
                    5 => avx512::row::<5>(av, slab, w, cols, o),
                    4 => avx512::row::<4>(av, slab, w, cols, o),
                    3 => avx512::row::<3>(av, slab, w, cols, o),
                    2 => avx512::row::<2>(av, slab, w, cols, o),
                    _ => avx512::row::<1>(av, slab, w, cols, o),
                }
            };
            c = vw;
        }
        if c == w {
            continue;
        }
        let at = &arow[c..];
        let brow = |j: u32| &slab[j as usize * w + c..(j as usize + 1) * w];
        let mut p = 0;
        let quads = cols.len() / 4;
        for _ in 0..quads {
            let js = [cols[p], cols[p + 1], cols[p + 2], cols[p + 3]];
            let r = dot4::<FMA>(at, [brow(js[0]), brow(js[1]), brow(js[2]), brow(js[3])]);
            for t in 0..4 {
                o[p + t] += r[t];
            }
            p += 4;
        }
        for q in p..cols.len() {
            o[q] += dot1::<FMA>(at, brow(cols[q]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// `o[p] += arow . slab[cols[p]][..16 V]` for every entry p of the row over the first 16 V
    /// columns of a block (V = 8: a full 128-wide block), eight entries at a time, the last few
    /// four at a time.
    /// SAFETY: the CPU has AVX-512F; `arow.len() == 16 V`; every `cols[p]` indexes a row of
    /// `slab` (row stride `stride` >= 16 V).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row<const V: usize>(
        arow: &[f32],
        slab: &[f32],
        stride: usize,
        cols: &[u32],
        o: &mut [f32],
    ) {
        const { assert!(V >= 1 && V <= 8) };
        let width = 16 * V;
        debug_assert!(arow.len() == width && stride >= width);
        // SAFETY: arow holds V * 16 floats.
        let av: [__m512; V] =
            std::array::from_fn(|c| unsafe { _mm512_loadu_ps(arow.as_ptr().add(16 * c)) });
        let groups = cols.len() / 8;
        for g in 0..groups {
            let js: [usize; 8] = std::array::from_fn(|u| cols[8 * g + u] as usize * stride);
            // SAFETY: every js[u] is the start of a slab row (caller's contract).
            let acc = unsafe { dots(&av, slab, js) };
            let r = sum8(acc);
            for u in 0..8 {
                o[8 * g + u] += r[u];
            }
        }
        // the last 1..=7 entries: groups of four (the missing ones of the last group repeat its first
        // entry and are not stored)
        let mut p = groups * 8;
        while p < cols.len() {
            let n = (cols.len() - p).min(4);
            let js: [usize; 4] =
                std::array::from_fn(|u| cols[p + if u < n { u } else { 0 }] as usize * stride);
            // SAFETY: as above.
            let acc = unsafe { dots(&av, slab, js) };
            let r = sum4(acc);
            for u in 0..n {
                o[p + u] += r[u];
            }
            p += n;
        }
    }

    /// `G` dot products of A's block (in registers) with slab rows starting at `js`, as vectors
    /// whose lanes still have to be summed: each load of the slab feeds one multiply-add.
    /// SAFETY: the CPU has AVX-512F; every `js[u] + 16 V <= slab.len()`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn dots<const V: usize, const G: usize>(
        av: &[__m512; V],
        slab: &[f32],
        js: [usize; G],
    ) -> [__m512; G] {
        debug_assert!(js.iter().all(|&j| j + 16 * V <= slab.len()));
        let mut acc = [_mm512_setzero_ps(); G];
        for (c, a) in av.iter().enumerate() {
            for u in 0..G {
                // SAFETY: slab row js[u] holds 16 V floats (caller's contract).
                let bv = unsafe { _mm512_loadu_ps(slab.as_ptr().add(js[u] + 16 * c)) };
                acc[u] = _mm512_fmadd_ps(*a, bv, acc[u]);
            }
        }
        acc
    }

    /// First level of the transposed reduction (within 128-bit lanes): [x0+x1, y0+y1, x2+x3, y2+y3].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair_ps(x: __m512, y: __m512) -> __m512 {
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    }

    /// Second level: from two first-level vectors, each 128-bit lane holds one partial of four sums.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair_pd(x: __m512, y: __m512) -> __m512 {
        let (xd, yd) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(xd, yd)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(xd, yd)),
        )
    }

    /// The lane sums of four vectors, reduced together as in [`sum8`].
    #[target_feature(enable = "avx512f")]
    fn sum4(v: [__m512; 4]) -> [f32; 4] {
        // each 128-bit lane: one partial of [v0, v1, v2, v3]
        let b = pair_pd(pair_ps(v[0], v[1]), pair_ps(v[2], v[3]));
        let c = _mm512_add_ps(b, _mm512_shuffle_f32x4::<0b01_00_11_10>(b, b)); // lanes 0+2, 1+3
        let d = _mm512_add_ps(c, _mm512_shuffle_f32x4::<0b10_11_00_01>(c, c)); // lane 0: all four
        let mut out = [0.0f32; 4];
        // SAFETY: out holds 4 floats.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps128(d)) };
        out
    }

    /// The lane sums of eight vectors, reduced together: at each level two vectors' halves are
    /// added into one vector, so 8 sums cost 7 + 3 shuffled adds instead of 8 separate reductions.
    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels) fn sum8(v: [__m512; 8]) -> [f32; 8] {
        // levels 1 and 2: each 128-bit lane of b0 (b1) holds one partial of [v0..v3] ([v4..v7])
        let b0 = pair_pd(pair_ps(v[0], v[1]), pair_ps(v[2], v[3]));
        let b1 = pair_pd(pair_ps(v[4], v[5]), pair_ps(v[6], v[7]));
        // level 3: add lanes pairwise across b0 and b1: [b0 L0+L1, b0 L2+L3, b1 L0+L1, b1 L2+L3]
        let c = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(b0, b1),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(b0, b1),
        );
        // level 4: [b0 total, b1 total] as two 128-bit lanes of the 256-bit sum
        let d = _mm512_shuffle_f32x4::<0b11_01_10_00>(c, c);
        let lo = _mm512_castps512_ps256(d);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(d)));
        let s = _mm256_add_ps(lo, hi);
        let mut out = [0.0f32; 8];
        // SAFETY: out holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out
    }
}

const L: usize = 16;

/// Four dot products against one pass over `a`. Fixed-length chunks and four separate accumulator
/// arrays keep every access provably in bounds, so the loop compiles to vector FMAs on registers.
#[inline(always)]
fn dot4<const FMA: bool>(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    let n = a.len();
    let (mut s0, mut s1, mut s2, mut s3) = ([0.0f32; L], [0.0f32; L], [0.0f32; L], [0.0f32; L]);
    let chunks = a
        .chunks_exact(L)
        .zip(bs[0].chunks_exact(L))
        .zip(bs[1].chunks_exact(L))
        .zip(bs[2].chunks_exact(L))
        .zip(bs[3].chunks_exact(L));
    for ((((x, y0), y1), y2), y3) in chunks {
        for l in 0..L {
            s0[l] = fmadd::<FMA>(x[l], y0[l], s0[l]);
            s1[l] = fmadd::<FMA>(x[l], y1[l], s1[l]);
            s2[l] = fmadd::<FMA>(x[l], y2[l], s2[l]);
            s3[l] = fmadd::<FMA>(x[l], y3[l], s3[l]);
        }
    }
    let full = n / L * L;
    let mut r = [
        s0.iter().sum::<f32>(),
        s1.iter().sum(),
        s2.iter().sum(),
        s3.iter().sum(),
    ];
    for k in full..n {
        for t in 0..4 {
            r[t] = fmadd::<FMA>(a[k], bs[t][k], r[t]);
        }
    }
    r
}

/// One dot product, vectorized as [`dot4`].
#[inline(always)]
fn dot1<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut s = [0.0f32; L];
    for (x, y) in a.chunks_exact(L).zip(b.chunks_exact(L)) {
        for l in 0..L {
            s[l] = fmadd::<FMA>(x[l], y[l], s[l]);
        }
    }
    let full = n / L * L;
    let mut r: f32 = s.iter().sum();
    for k in full..n {
        r = fmadd::<FMA>(a[k], b[k], r);
    }
    r
}

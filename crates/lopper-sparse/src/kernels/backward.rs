//! `spmm_t_sddmm`: the backward of a sparse layer in one pass over W's transpose.
//!
//! For `y = W x` on feature-major operands (X (K, D), Y (M, D), D the tokens), the backward needs
//! dX = W^T dY ([`super::spmm_t`]) and dW = dY X^T at W's pattern ([`super::sddmm`]). Both walk
//! the stored entries and read one row of dY per entry: spmm_t through the transpose (row j of W^T:
//! `dX[j] = sum_i w_ij dY[i]`), sddmm through W (row i: `dW_ij = dY[i] . X[j]`). Walked together
//! in W^T's order, each loaded block of dY[i] feeds both: `acc += w_ij dY[i]` and
//! `dot_ij += X[j] dY[i]` with X[j]'s block held in registers, so one load feeds two multiply-adds
//! instead of one (the separate kernels are bound by those loads; docs/benchmarks.md).
//! The gradient comes out in the transpose's order: `dwt[q]` for W^T's entry q, which is W's entry
//! `perm()[q]` ([`CsrTranspose::perm`]).
//!
//! Each task owns a chunk of W^T's rows (so rows of dX and a contiguous range of `dwt`), balanced by
//! stored entries, and walks D in blocks of 128 read from an aligned packed slab of dY (as sddmm).
use super::grid::{SyncPtr, balanced_rows, call_key, par_for_work, run_grid, with_packed};
use super::sddmm::D_BLOCK;
use super::simd::{Isa, fmadd, isa, multiversion};
use crate::error::{check_nnz, shape_err};
use crate::{CsrTranspose, Result};
use lopper_tensor::{MatMut, MatRef, Par};

/// `dx = W^T dy` (overwritten) and `dwt[q] += x[j, :] . dy[i, :]` for every stored entry q = (j, i)
/// of `wt` = W^T, where W is (M, K): dy (M, D), x (K, D), dx (K, D), dwt has nnz elements in W^T's
/// order. The fused backward of `y = W x` (see the module doc).
pub fn spmm_t_sddmm(
    wt: &CsrTranspose,
    dy: MatRef<'_>,
    x: MatRef<'_>,
    mut dx: MatMut<'_>,
    dwt: &mut [f32],
    par: Par,
) -> Result<()> {
    let t = wt.csr();
    let (k, m) = (t.rows(), t.cols());
    let d = dy.cols();
    if dy.rows() != m || x.rows() != k || x.cols() != d || dx.rows() != k || dx.cols() != d {
        return Err(shape_err(
            "spmm_t_sddmm",
            format!(
                "W^T is {k}x{m}, dY is {}x{}, X is {}x{}, dX is {}x{} (need dY: M x D, X and dX: K x D)",
                dy.rows(),
                dy.cols(),
                x.rows(),
                x.cols(),
                dx.rows(),
                dx.cols()
            ),
        ));
    }
    check_nnz("spmm_t_sddmm", "dW", dwt.len(), t.nnz())?;
    if d == 0 || k == 0 {
        return Ok(());
    }
    // two multiply-adds per stored entry and column: dX's and dW's
    let par = par_for_work(par, t.nnz().saturating_mul(d).saturating_mul(2));
    let rp = t.row_ptr();
    let (ci, v, yd, xd) = (t.col_idx(), t.values(), dy.data(), x.data());
    let rows = balanced_rows(k, par.threads().max(1), |j| rp[j + 1] - rp[j] + 1);
    let (dxp, dwp) = (SyncPtr(dx.data().as_mut_ptr()), SyncPtr(dwt.as_mut_ptr()));
    let key = call_key();
    run_grid(par, &rows, &[0..d], |r, _| {
        for d0 in (0..d).step_by(D_BLOCK) {
            let d1 = (d0 + D_BLOCK).min(d);
            with_packed(yd, m, d, d0, d1, key, false, None, |slab| {
                backward_task(rp, ci, v, slab, xd, d, d0, d1, dxp, dwp, r.start, r.end)
            });
        }
    });
    Ok(())
}

multiversion!(fn backward_task(rp: &[usize], ci: &[u32], v: &[f32], slab: &[f32], x: &[f32],
                               d: usize, d0: usize, d1: usize, dx: SyncPtr, dw: SyncPtr, r0: usize,
                               r1: usize) => backward_body);

/// Rows r0..r1 of W^T, D's columns d0..d1: `dx[j, d0..d1] = sum_q w_q slab[i_q]` and
/// `dw[q] += x[j, d0..d1] . slab[i_q]`, where `slab` is `dY[:, d0..d1]` packed with row stride
/// `d1 - d0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body<const FMA: bool>(
    rp: &[usize],
    ci: &[u32],
    v: &[f32],
    slab: &[f32],
    x: &[f32],
    d: usize,
    d0: usize,
    d1: usize,
    dx: SyncPtr,
    dw: SyncPtr,
    r0: usize,
    r1: usize,
) {
    let w = d1 - d0;
    // AVX-512 rows over the block's whole registers (up to 8: a full 128-wide block; a 64-token
    // sequence panel, as attention's backward passes, in 4), the portable loop over the 1..15
    // columns after them, or over all of a block narrower than one register
    let vw = if FMA && isa() == Isa::Avx512 {
        w / 16 * 16
    } else {
        0
    };
    debug_assert!(w <= D_BLOCK);
    for j in r0..r1 {
        let (s, e) = (rp[j], rp[j + 1]);
        let (cols, vals) = (&ci[s..e], &v[s..e]);
        // SAFETY: row j of dX (columns d0..d1) and entries s..e of dW belong to this task alone
        // (tasks own disjoint row chunks of W^T), and both ranges lie inside their buffers.
        let (out, dws) = unsafe {
            (
                std::slice::from_raw_parts_mut(dx.0.add(j * d + d0), w),
                std::slice::from_raw_parts_mut(dw.0.add(s), e - s),
            )
        };
        let xr = &x[j * d + d0..j * d + d1];
        let mut c = 0; // the columns c..w left to the portable loop
        #[cfg(target_arch = "x86_64")]
        if vw > 0 {
            let (xv, ov) = (&xr[..vw], &mut out[..vw]);
            // SAFETY: vw > 0 implies AVX-512F (isa() checked it); xv and ov hold vw = 16 V
            // floats, and every slab row read has w >= vw (i < M, the slab's row count).
            unsafe {
                match vw / 16 {
                    8 => avx512::row::<8>(xv, slab, w, cols, vals, ov, dws),
                    7 => avx512::row::<7>(xv, slab, w, cols, vals, ov, dws),
                    6 => avx512::row::<6>(xv, slab, w, cols, vals, ov, dws),
                    5 => avx512::row::<5>(xv, slab, w, cols, vals, ov, dws),
                    4 => avx512::row::<4>(xv, slab, w, cols, vals, ov, dws),
                    3 => avx512::row::<3>(xv, slab, w, cols, vals, ov, dws),
                    2 => avx512::row::<2>(xv, slab, w, cols, vals, ov, dws),
                    _ => avx512::row::<1>(xv, slab, w, cols, vals, ov, dws),
                }
            }
            c = vw;
        }
        if c == w {
            continue;
        }
        let (xt, ot) = (&xr[c..], &mut out[c..]);
        ot.fill(0.0);
        for ((&i, &wv), o) in cols.iter().zip(vals).zip(dws.iter_mut()) {
            let yr = &slab[i as usize * w + c..(i as usize + 1) * w];
            for (a, &y) in ot.iter_mut().zip(yr) {
                *a = fmadd::<FMA>(wv, y, *a);
            }
            *o += dot::<FMA>(xt, yr);
        }
    }
}

/// `a . b` in 16 independent lanes (vectorizes), then the rest.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut s = [0.0f32; L];
    for (x, y) in a.chunks_exact(L).zip(b.chunks_exact(L)) {
        for l in 0..L {
            s[l] = fmadd::<FMA>(x[l], y[l], s[l]);
        }
    }
    let full = a.len() / L * L;
    let mut r: f32 = s.iter().sum();
    for k in full..a.len() {
        r = fmadd::<FMA>(a[k], b[k], r);
    }
    r
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::kernels::sddmm::avx512::sum8;
    use std::arch::x86_64::*;

    /// One row j of W^T over the first 16 V columns of a block (V = 8: a full 128-wide block):
    /// X[j]'s columns in V registers, dX[j]'s in V accumulators, and per group of eight entries
    /// eight dot products, reduced together (added to `dw`).
    /// SAFETY: the CPU has AVX-512F; `xr` and `out` hold 16 V floats; every `cols[p]` indexes
    /// a row of `slab` (row stride `stride` >= 16 V); `vals` and `dw` have `cols.len()` elements.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn row<const V: usize>(
        xr: &[f32],
        slab: &[f32],
        stride: usize,
        cols: &[u32],
        vals: &[f32],
        out: &mut [f32],
        dw: &mut [f32],
    ) {
        const { assert!(V >= 1 && V <= 8) };
        let width = 16 * V;
        debug_assert!(xr.len() == width && out.len() == width && stride >= width);
        debug_assert!(vals.len() == cols.len() && dw.len() == cols.len());
        // SAFETY: xr holds V * 16 floats.
        let xv: [__m512; V] =
            std::array::from_fn(|c| unsafe { _mm512_loadu_ps(xr.as_ptr().add(16 * c)) });
        let mut acc = [_mm512_setzero_ps(); V];
        let ys = slab.as_ptr();
        // The dot products wait in `dots` (indexed at run time, so in memory: one store each) and
        // are reduced eight at a time. Unrolling eight entries instead let the compiler hoist all
        // 64 loads of a group and spill them.
        let mut dots = [_mm512_setzero_ps(); 8];
        let n = cols.len();
        for p in 0..n {
            let base = cols[p] as usize * stride;
            debug_assert!(base + width <= slab.len());
            let wb = _mm512_set1_ps(vals[p]);
            // two chains of four for the dot product (half the latency of one chain of eight)
            let mut dot = [_mm512_setzero_ps(); 2];
            for c in 0..V {
                // SAFETY: slab row cols[p] holds 16 V floats (caller's contract).
                let y = unsafe { _mm512_loadu_ps(ys.add(base + 16 * c)) };
                dot[c % 2] = _mm512_fmadd_ps(xv[c], y, dot[c % 2]);
                acc[c] = _mm512_fmadd_ps(wb, y, acc[c]);
            }
            dots[p % 8] = _mm512_add_ps(dot[0], dot[1]);
            if p % 8 == 7 {
                let r = sum8(dots);
                for u in 0..8 {
                    dw[p - 7 + u] += r[u];
                }
            }
        }
        for p in n - n % 8..n {
            dw[p] += _mm512_reduce_add_ps(dots[p % 8]);
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: out holds V * 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * c), *a) };
        }
    }
}

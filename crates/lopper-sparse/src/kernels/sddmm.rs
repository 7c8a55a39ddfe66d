//! `sddmm`: sampled dense-dense product, the weight gradient at W's pattern.
//!
//! For each stored entry p = (i, j) of the pattern: `out[p] = A[i, :] . B[j, :]`.
//! Shapes: pattern (M, K), A (M, D), B (K, D), out (nnz). For a Linear layer y = x W^T with
//! x (T, K) and dy (T, M): dW at the pattern is sddmm(W, dy^T, x^T), i.e. A = dy^T (M, T) and
//! B = x^T (K, T). Work: nnz * D multiply-adds instead of M * K * D.
//! Each task owns a chunk of rows (so a contiguous range of `out`); D is walked in blocks so that the
//! slab of B a task reads stays in cache, and four entries are dotted at once against one load of A.
use super::grid::{SyncPtr, chunks_for, run_grid};
use super::simd::{fmadd, multiversion};
use crate::error::shape_err;
use crate::{Csr, Result};
use lopper_tensor::{MatRef, Par};

/// Length of the D blocks: 512 f32 = 2 KiB per row of B.
const D_BLOCK: usize = 512;

/// `out[p] = a[i, :] . b[j, :]` for each stored entry p = (i, j) of `pattern` (its values are not
/// read). A (M, D), B (K, D), out has nnz elements and is overwritten.
pub fn sddmm(pattern: &Csr, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], par: Par) -> Result<()> {
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
    if out.len() != pattern.nnz() {
        return Err(shape_err(
            "sddmm",
            format!(
                "out has {} elements, pattern has {} entries",
                out.len(),
                pattern.nnz()
            ),
        ));
    }
    out.fill(0.0);
    let d = a.cols();
    if d == 0 || pattern.nnz() == 0 {
        return Ok(());
    }
    let rp = pattern.row_ptr();
    let rows = chunks_for(pattern.rows(), par.threads(), 1, |i| {
        (rp[i + 1] - rp[i]) + 1
    });
    let op = SyncPtr(out.as_mut_ptr());
    let (ci, ad, bd) = (pattern.col_idx(), a.data(), b.data());
    run_grid(par, &rows, &[0..d], |r, _| {
        sddmm_task(rp, ci, ad, bd, d, op, r.start, r.end)
    });
    Ok(())
}

multiversion!(fn sddmm_task(rp: &[usize], ci: &[u32], a: &[f32], b: &[f32], d: usize, out: SyncPtr,
                            r0: usize, r1: usize) => sddmm_body);

#[inline(always)]
fn sddmm_body<const FMA: bool>(
    rp: &[usize],
    ci: &[u32],
    a: &[f32],
    b: &[f32],
    d: usize,
    out: SyncPtr,
    r0: usize,
    r1: usize,
) {
    // SAFETY: entries rp[r0]..rp[r1] of `out` belong to this task's rows alone.
    let out = unsafe { std::slice::from_raw_parts_mut(out.0.add(rp[r0]), rp[r1] - rp[r0]) };
    let base = rp[r0];
    let mut d0 = 0;
    while d0 < d {
        let d1 = (d0 + D_BLOCK).min(d);
        for i in r0..r1 {
            let arow = &a[i * d + d0..i * d + d1];
            let (s, e) = (rp[i], rp[i + 1]);
            let cols = &ci[s..e];
            let o = &mut out[s - base..e - base];
            let brow = |j: u32| &b[j as usize * d + d0..j as usize * d + d1];
            let quads = cols.len() / 4;
            for q in 0..quads {
                let js = [
                    cols[4 * q],
                    cols[4 * q + 1],
                    cols[4 * q + 2],
                    cols[4 * q + 3],
                ];
                let r = dot4::<FMA>(arow, [brow(js[0]), brow(js[1]), brow(js[2]), brow(js[3])]);
                for t in 0..4 {
                    o[4 * q + t] += r[t];
                }
            }
            for p in 4 * quads..cols.len() {
                o[p] += dot1::<FMA>(arow, brow(cols[p]));
            }
        }
        d0 = d1;
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

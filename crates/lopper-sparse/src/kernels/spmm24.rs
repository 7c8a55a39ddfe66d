//! `spmm_24`: Y = W X with W in 2:4 form ([`Sparse24`]).
//!
//! Shapes: W (M, K) 2:4 (values (M, K/2) + metadata), X (K, N), Y (M, N). Work: M*K/2*N
//! multiply-adds, half of the dense GEMM's.
//! Register tile: MR = 4 rows of W x T = 32 columns of Y. For each group g of 4 along K, the four rows
//! X[4g..4g+4, c..c+T] are read once from cache and reused by the MR rows, each of which picks its two
//! rows by its metadata: `acc[r] += v0 * X[4g + i0] + v1 * X[4g + i1]`.
use super::grid::{SyncPtr, chunks_for, col_blocks, run_grid};
use super::simd::{fmadd, multiversion};
use crate::error::shape_err;
use crate::sparse24::meta_words;
use crate::{Result, Sparse24};
use lopper_tensor::{MatMut, MatRef, Par};

/// Columns of Y per task (the slab of X read by a task is K x 256 f32).
const COL_BLOCK: usize = 256;
const MR: usize = 4;

/// `y = w x`: W (M, K) 2:4, X (K, N), Y (M, N), overwritten.
pub fn spmm_24(w: &Sparse24, x: MatRef<'_>, mut y: MatMut<'_>, par: Par) -> Result<()> {
    if x.rows() != w.cols() || y.rows() != w.rows() || y.cols() != x.cols() {
        return Err(shape_err(
            "spmm_24",
            format!(
                "W is {}x{}, X is {}x{}, Y is {}x{}",
                w.rows(),
                w.cols(),
                x.rows(),
                x.cols(),
                y.rows(),
                y.cols()
            ),
        ));
    }
    let n = x.cols();
    if n == 0 || w.rows() == 0 {
        return Ok(());
    }
    if w.cols() == 0 {
        y.data().fill(0.0);
        return Ok(());
    }
    let blocks = col_blocks(n, COL_BLOCK);
    // chunks in units of MR rows
    let units = w.rows().div_ceil(MR);
    let chunks: Vec<_> = chunks_for(units, par.threads(), blocks.len(), |_| 1)
        .into_iter()
        .map(|r| r.start * MR..(r.end * MR).min(w.rows()))
        .collect();
    let yp = SyncPtr(y.data().as_mut_ptr());
    let (v, m, xd, k) = (w.values(), w.meta(), x.data(), w.cols());
    run_grid(par, &chunks, &blocks, |r, c| {
        spmm24_task(v, m, xd, k, n, yp, r.start, r.end, c.start, c.end)
    });
    Ok(())
}

multiversion!(fn spmm24_task(v: &[f32], m: &[u16], x: &[f32], k: usize, n: usize, y: SyncPtr,
                             r0: usize, r1: usize, c0: usize, c1: usize) => spmm24_body);

#[inline(always)]
fn spmm24_body<const FMA: bool>(
    v: &[f32],
    m: &[u16],
    x: &[f32],
    k: usize,
    n: usize,
    y: SyncPtr,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
) {
    let mut c = c0;
    while c < c1 {
        let width = c1 - c;
        let t = if width >= 32 {
            32
        } else if width >= 8 {
            8
        } else {
            1
        };
        let mut i = r0;
        while i < r1 {
            let mr = (r1 - i).min(MR);
            match (mr, t) {
                (4, 32) => tile::<FMA, 4, 32>(v, m, x, k, n, y, i, c),
                (4, 8) => tile::<FMA, 4, 8>(v, m, x, k, n, y, i, c),
                (4, _) => tile::<FMA, 4, 1>(v, m, x, k, n, y, i, c),
                (_, 32) => (i..i + mr).for_each(|ii| tile::<FMA, 1, 32>(v, m, x, k, n, y, ii, c)),
                (_, 8) => (i..i + mr).for_each(|ii| tile::<FMA, 1, 8>(v, m, x, k, n, y, ii, c)),
                _ => (i..i + mr).for_each(|ii| tile::<FMA, 1, 1>(v, m, x, k, n, y, ii, c)),
            }
            i += mr;
        }
        c += t;
    }
}

/// Y[i..i+R, c..c+T] = W[i..i+R, :] X[:, c..c+T].
#[inline(always)]
fn tile<const FMA: bool, const R: usize, const T: usize>(
    v: &[f32],
    m: &[u16],
    x: &[f32],
    k: usize,
    n: usize,
    y: SyncPtr,
    i: usize,
    c: usize,
) {
    let half = k / 2;
    let mw = meta_words(k);
    let mut acc = [[0.0f32; T]; R];
    let xrow = |row: usize| -> &[f32; T] {
        // SAFETY: row < K (a 2:4 index is 4g + p with p < 4 and g < K/4) and c + T <= N.
        unsafe { &*(x.as_ptr().add(row * n + c) as *const [f32; T]) }
    };
    for g in 0..k / 4 {
        let shift = 4 * (g % 4);
        for r in 0..R {
            let code = (m[(i + r) * mw + g / 4] >> shift) as usize;
            let (x0, x1) = (xrow(4 * g + (code & 3)), xrow(4 * g + ((code >> 2) & 3)));
            let (w0, w1) = (v[(i + r) * half + 2 * g], v[(i + r) * half + 2 * g + 1]);
            for l in 0..T {
                acc[r][l] = fmadd::<FMA>(w1, x1[l], fmadd::<FMA>(w0, x0[l], acc[r][l]));
            }
        }
    }
    for r in 0..R {
        // SAFETY: rows i..i+R and columns c..c+T of Y belong to this task alone (disjoint grid).
        let out = unsafe { std::slice::from_raw_parts_mut(y.0.add((i + r) * n + c), T) };
        out.copy_from_slice(&acc[r]);
    }
}

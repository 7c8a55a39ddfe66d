//! `spmm`: Y = W X with W sparse (CSR), and `spmm_t`: Y = W^T X through the transpose.
//!
//! Shapes: W is (M, K) with nnz stored entries, X is (K, N) dense row-major, Y is (M, N).
//! Work: nnz * N multiply-adds; the dense GEMM of the same shape does M * K * N.
//! Each task owns rows r0..r1 and columns c0..c1 of Y; each row is computed in register tiles of
//! 64 (then 16, then 1) columns: `acc[0..T] += w_ij * X[j, c..c+T]` over the row's entries, with two
//! accumulator sets for even and odd entries so that consecutive multiply-adds are independent.
use super::grid::{SyncPtr, chunks_for, col_blocks, run_grid};
use super::simd::{fmadd, multiversion};
use crate::error::shape_err;
use crate::{Csr, CsrTranspose, Result};
use lopper_tensor::{MatMut, MatRef, Par};

/// Bytes of X's slab (K rows x block columns) that a task should keep in its core's L2 (1 MiB on the
/// development machine's Cascade Lake; half of it leaves room for W's row and Y).
const L2_SLAB_BYTES: usize = 512 << 10;

/// Columns of Y per task: the widest multiple of 64 (at most 512) whose slab of X fits
/// [`L2_SLAB_BYTES`], and at least 64.
fn col_block(k: usize) -> usize {
    (L2_SLAB_BYTES / (4 * k.max(1)) / 64 * 64).clamp(64, 512)
}

/// `y = w x`: W (M, K) sparse, X (K, N), Y (M, N), overwritten.
pub fn spmm(w: &Csr, x: MatRef<'_>, mut y: MatMut<'_>, par: Par) -> Result<()> {
    if x.rows() != w.cols() || y.rows() != w.rows() || y.cols() != x.cols() {
        return Err(shape_err(
            "spmm",
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
    let blocks = col_blocks(n, col_block(w.cols()));
    let rp = w.row_ptr();
    let rows = chunks_for(w.rows(), par.threads(), blocks.len(), |i| {
        rp[i + 1] - rp[i] + 2
    });
    let yp = SyncPtr(y.data().as_mut_ptr());
    let (ci, v, xd) = (w.col_idx(), w.values(), x.data());
    run_grid(par, &rows, &blocks, |r, c| {
        spmm_task(rp, ci, v, xd, n, yp, r.start, r.end, c.start, c.end)
    });
    Ok(())
}

/// `y = w^T x`: W (M, K) sparse, X (M, N), Y (K, N), overwritten. Builds W's transpose (O(nnz));
/// when W's pattern is reused across calls, keep a [`CsrTranspose`] and call [`spmm_t_with`].
pub fn spmm_t(w: &Csr, x: MatRef<'_>, y: MatMut<'_>, par: Par) -> Result<()> {
    if x.rows() != w.rows() {
        return Err(shape_err(
            "spmm_t",
            format!(
                "W is {}x{}, X has {} rows (need {})",
                w.rows(),
                w.cols(),
                x.rows(),
                w.rows()
            ),
        ));
    }
    spmm(w.transpose().csr(), x, y, par)
}

/// `y = w^T x` with a cached transpose of W (refresh it after W's values change).
pub fn spmm_t_with(wt: &CsrTranspose, x: MatRef<'_>, y: MatMut<'_>, par: Par) -> Result<()> {
    spmm(wt.csr(), x, y, par)
}

multiversion!(fn spmm_task(rp: &[usize], ci: &[u32], v: &[f32], x: &[f32], n: usize, y: SyncPtr,
                           r0: usize, r1: usize, c0: usize, c1: usize) => spmm_body);

#[inline(always)]
fn spmm_body<const FMA: bool>(
    rp: &[usize],
    ci: &[u32],
    v: &[f32],
    x: &[f32],
    n: usize,
    y: SyncPtr,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
) {
    for i in r0..r1 {
        let (cols, vals) = (&ci[rp[i]..rp[i + 1]], &v[rp[i]..rp[i + 1]]);
        // SAFETY: row i, columns c0..c1 of Y (n columns, row-major) belong to this task alone:
        // tasks are disjoint (row chunk x column block), and the range lies inside Y.
        let out = unsafe { std::slice::from_raw_parts_mut(y.0.add(i * n + c0), c1 - c0) };
        let mut c = c0;
        while c + 64 <= c1 {
            tile::<FMA, 64>(cols, vals, x, n, c, &mut out[c - c0..c - c0 + 64]);
            c += 64;
        }
        while c + 16 <= c1 {
            tile::<FMA, 16>(cols, vals, x, n, c, &mut out[c - c0..c - c0 + 16]);
            c += 16;
        }
        while c < c1 {
            tile::<FMA, 1>(cols, vals, x, n, c, &mut out[c - c0..c - c0 + 1]);
            c += 1;
        }
    }
}

/// `out[0..T] = sum_p vals[p] * X[cols[p], c..c+T]`.
#[inline(always)]
fn tile<const FMA: bool, const T: usize>(
    cols: &[u32],
    vals: &[f32],
    x: &[f32],
    n: usize,
    c: usize,
    out: &mut [f32],
) {
    let mut a0 = [0.0f32; T];
    let mut a1 = [0.0f32; T];
    let pairs = cols.len() / 2;
    let xrow = |j: u32| -> &[f32; T] {
        // SAFETY: j < K (Csr invariant, and spmm checked X has K rows) and c + T <= N, so
        // X[j, c..c+T] lies inside x (K * N elements).
        unsafe { &*(x.as_ptr().add(j as usize * n + c) as *const [f32; T]) }
    };
    for p in 0..pairs {
        let (x0, x1) = (xrow(cols[2 * p]), xrow(cols[2 * p + 1]));
        let (w0, w1) = (vals[2 * p], vals[2 * p + 1]);
        for l in 0..T {
            a0[l] = fmadd::<FMA>(w0, x0[l], a0[l]);
            a1[l] = fmadd::<FMA>(w1, x1[l], a1[l]);
        }
    }
    if cols.len() % 2 == 1 {
        let x0 = xrow(cols[cols.len() - 1]);
        let w0 = vals[cols.len() - 1];
        for l in 0..T {
            a0[l] = fmadd::<FMA>(w0, x0[l], a0[l]);
        }
    }
    for l in 0..T {
        out[l] = a0[l] + a1[l];
    }
}

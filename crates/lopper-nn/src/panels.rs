//! Sparse Linear products on row panels: the transposes the CSR kernels need (they work on
//! feature-major `X^T (K, N)`) are done per panel of `PANEL` rows, into per-thread buffers that
//! stay in cache, instead of over whole (N, K) activations. The buffers the kernels read as their
//! dense operand start on a 64-byte boundary, so the kernels read them in place (no second copy).
//!
//! Rows 0..N are split into one contiguous part per thread (rayon), each part walked in panels:
//!   forward:  a (K, r) = x[panel]^T;  c (M, r) = W a (spmm);  y[panel] = c^T.
//!   backward: a = x[panel]^T;  b (M, r) = dy[panel]^T;  g (nnz) += sddmm(W, b, a);
//!             c (K, r) = W^T b (spmm with the cached transpose);  dx[panel] = c^T;
//!   and dW += the parts' g.
//! The kernels run single-threaded inside a part (`Par::Seq`): one pool, the caller's rayon.
use crate::Result;
use crate::kernels::transpose;
use crate::util::{aligned, ensure};
use lopper_sparse::kernels::spmm_t_with;
use lopper_sparse::{Csr, CsrTranspose, Sparse24, sddmm, spmm, spmm_24};
use lopper_tensor::{MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows per panel: the kernels' 128-wide AVX-512 tile, and a (K, 128) panel of at most 512 KiB
/// for K <= 1024.
const PANEL: usize = 128;

/// One part's buffers (grown on first use, reused by every later step).
#[derive(Clone, Debug, Default)]
pub(crate) struct PartBufs {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    g: Vec<f32>,
    gsum: Vec<f32>,
}

/// The forward kernel of a sparse weight: `c (M, r) = W a (K, r)`.
pub(crate) enum Fwd<'a> {
    Csr(&'a Csr),
    S24(&'a Sparse24),
}

/// Rows per part for `n` rows on `par`'s threads (a multiple of [`PANEL`] except the last).
fn part_rows(n: usize, par: Par) -> usize {
    let parts = par.threads().clamp(1, n.div_ceil(PANEL).max(1));
    n.div_ceil(parts).div_ceil(PANEL) * PANEL
}

/// Runs `f(first_row, out_chunk, bufs)` over the parts, in parallel when `par` has threads.
fn run_parts<F>(
    n: usize,
    width: usize,
    out: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
    f: F,
) -> Result<()>
where
    F: Fn(usize, &mut [f32], &mut PartBufs) -> Result<()> + Sync + Send,
{
    let rows = part_rows(n, par);
    let parts = n.div_ceil(rows).max(1);
    if bufs.len() < parts {
        bufs.resize_with(parts, PartBufs::default);
    }
    if n == 0 || width == 0 {
        return Ok(());
    }
    if parts > 1 {
        out.par_chunks_mut(rows * width)
            .zip(bufs.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (o, b))| f(i * rows, o, b))
    } else {
        f(0, out, &mut bufs[0])
    }
}

/// `y (n, m) = x (n, k) W^T` through panels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: Fwd<'_>,
    x: &[f32],
    n: usize,
    m: usize,
    k: usize,
    y: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
) -> Result<()> {
    run_parts(n, m, y, bufs, par, |row0, y, pb| {
        let rows = y.len() / m;
        for p0 in (0..rows).step_by(PANEL) {
            let r = PANEL.min(rows - p0);
            let (g0, g1) = (row0 + p0, row0 + p0 + r);
            let a = aligned(&mut pb.a, k * r);
            ensure(&mut pb.c, m * r);
            transpose(&x[g0 * k..g1 * k], r, k, a, Par::Seq); // a (K, r)
            let (am, cm) = (MatRef::new(a, k, r)?, MatMut::new(&mut pb.c, m, r)?);
            match w {
                Fwd::Csr(w) => spmm(w, am, cm, Par::Seq)?, // c (M, r) = W a
                Fwd::S24(w) => spmm_24(w, am, cm, Par::Seq)?,
            }
            transpose(&pb.c, m, r, &mut y[p0 * m..(p0 + r) * m], Par::Seq); // y[panel] = c^T
        }
        Ok(())
    })
}

/// `dx (n, k) = dy W`, `dw (nnz) += sddmm(W, dy^T, x^T)` through panels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    w: &Csr,
    wt: &CsrTranspose,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    n: usize,
    m: usize,
    k: usize,
    dx: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
) -> Result<()> {
    let nnz = w.nnz();
    if n == 0 || k == 0 {
        return Ok(()); // no rows: no gradient (and no part ran to refresh its sum)
    }
    run_parts(n, k, dx, bufs, par, |row0, dx, pb| {
        let rows = dx.len() / k;
        ensure(&mut pb.gsum, nnz);
        pb.gsum.fill(0.0);
        for p0 in (0..rows).step_by(PANEL) {
            let r = PANEL.min(rows - p0);
            let (g0, g1) = (row0 + p0, row0 + p0 + r);
            let a = aligned(&mut pb.a, k * r);
            let b = aligned(&mut pb.b, m * r);
            ensure(&mut pb.c, k * r);
            ensure(&mut pb.g, nnz);
            transpose(&x[g0 * k..g1 * k], r, k, a, Par::Seq); // a (K, r) = x^T
            transpose(&dy[g0 * m..g1 * m], r, m, b, Par::Seq); // b (M, r) = dy^T
            let (am, bm) = (MatRef::new(a, k, r)?, MatRef::new(b, m, r)?);
            sddmm(w, bm, am, &mut pb.g, Par::Seq)?; // g[p=(i,j)] = b[i] . a[j]
            crate::util::add_into(&mut pb.gsum, &pb.g);
            spmm_t_with(wt, bm, MatMut::new(&mut pb.c, k, r)?, Par::Seq)?; // c (K, r) = W^T b
            transpose(&pb.c, k, r, &mut dx[p0 * k..(p0 + r) * k], Par::Seq); // dx[panel] = c^T
        }
        Ok(())
    })?;
    let parts = n.div_ceil(part_rows(n, par)).max(1);
    for pb in &bufs[..parts] {
        crate::util::add_into(dw, &pb.gsum); // every part ran and refreshed its sum above
    }
    Ok(())
}

//! `spmm`: Y = W X with W sparse (CSR), and `spmm_t`: Y = W^T X through the transpose.
//!
//! Shapes: W is (M, K) with nnz stored entries, X is (K, N) dense row-major, Y is (M, N).
//! Work: nnz * N multiply-adds; the dense GEMM of the same shape does M * K * N.
//! Each task owns rows r0..r1 and columns c0..c1 of Y; each row is computed in register tiles of
//! 128 (AVX-512) or 64, then 16 columns: `acc[0..T] += w_ij * X[j, c..c+T]` over the row's
//! entries, with two accumulator sets for even and odd entries so that consecutive multiply-adds
//! are independent. The last columns (fewer than 16) are one 16-wide tile ending at the row's end,
//! overlapping the previous tile (single columns only in a block narrower than 16).
//! With AVX-512, a W with at least 15% of its entries stored runs its 128-wide column tiles
//! through the outer-product kernel instead ([`super::spmm_outer`]), on slabs of 128 columns;
//! this row-wise one keeps the columns left over.
use super::grid::call_key;
use super::grid::{
    SyncPtr, check_mm, chunks_for, col_block, col_blocks, line_shift, par_for_work, run_grid,
    with_packed,
};
use super::simd::{fmadd, multiversion};
use super::spmm_outer::outer_task;
use super::ytile::CB;
use crate::error::shape_err;
use crate::kernels::{Outer, outer_used};
use crate::{Csr, CsrTranspose, Result};
use lopper_tensor::{MatMut, MatRef, Par};

/// `y = w x`: W (M, K) sparse, X (K, N), Y (M, N), overwritten.
pub fn spmm(w: &Csr, x: MatRef<'_>, y: MatMut<'_>, par: Par) -> Result<()> {
    spmm_impl(w, x, &[], y, par)
}

/// `y = w x + bias`: as [`spmm`], with `bias[i]` (M of them) added to every element of row i
/// as the row is stored (no second pass over Y).
pub fn spmm_bias(w: &Csr, x: MatRef<'_>, bias: &[f32], y: MatMut<'_>, par: Par) -> Result<()> {
    check_bias("spmm_bias", w.rows(), bias)?;
    spmm_impl(w, x, bias, y, par)
}

/// A bias must hold one value per row of W (an empty one is no bias).
pub(crate) fn check_bias(op: &'static str, rows: usize, bias: &[f32]) -> Result<()> {
    if bias.len() != rows {
        return Err(shape_err(
            op,
            format!("bias has {} values for {rows} rows of W", bias.len()),
        ));
    }
    Ok(())
}

/// [`spmm`] with `bias` (one per row) or none (empty).
fn spmm_impl(w: &Csr, x: MatRef<'_>, bias: &[f32], mut y: MatMut<'_>, par: Par) -> Result<()> {
    check_mm("spmm", (w.rows(), w.cols()), &x, &y)?;
    let n = x.cols();
    if n == 0 || w.rows() == 0 {
        return Ok(());
    }
    let par = par_for_work(par, w.nnz().saturating_mul(n));
    if n >= 128
        && outer_used(w)
        && let Some((plan, pv)) = w.outer(par)
    {
        spmm_outer(w, plan, pv, x, bias, y, par, 128);
        return Ok(());
    }
    // column blocks keep a slab of X in L2 for the many reads of each of its rows; a W that reads
    // the rows it reads only a few times each gains nothing from them, and copying X's blocks would
    // cost more than the product: X is then one block, read in place
    let block = if w.nnz() < FEW_READS * w.rows_read_count() {
        n
    } else {
        col_block(w.cols(), n)
    };
    let blocks = col_blocks(n, block);
    let rp = w.row_ptr();
    let rows = chunks_for(w.rows(), par.threads(), blocks.len(), |i| {
        rp[i + 1] - rp[i] + 2
    });
    let yp = SyncPtr(y.data().as_mut_ptr());
    let (ci, v, xd) = (w.col_idx(), w.values(), x.data());
    let k = w.cols();
    let key = call_key();
    // a misaligned X is copied to an aligned slab unless its rows are read too few times for the
    // copy (each thread's, of all of X) to pay; read in place, the tiles at both ends of a row are
    // narrow and the wide ones one fewer
    let in_place = w.nnz() < IN_PLACE_READS * k;
    // the rows of X that W reads, when it skips some and X is copied: only those are copied
    let copies = blocks.len() > 1 || !(xd.as_ptr() as usize).is_multiple_of(64);
    let used_rows = if copies { w.rows_read() } else { None };
    run_grid(par, &rows, &blocks, |r, c| {
        with_packed(xd, k, n, c.start, c.end, key, in_place, used_rows, |slab| {
            spmm_task(
                rp,
                ci,
                v,
                bias,
                slab,
                c.end - c.start,
                0,
                yp,
                n,
                r.start,
                r.end,
                c.start,
                c.end,
            )
        })
    });
    Ok(())
}

/// [`spmm`] through the outer-product kernel ([`super::spmm_outer`]) on X's slabs of 128 columns
/// (whole tiles of `tc`), the row-wise one on the columns left over.
#[allow(clippy::too_many_arguments)]
fn spmm_outer(
    w: &Csr,
    plan: &Outer,
    pv: &[f32],
    x: MatRef<'_>,
    bias: &[f32],
    mut y: MatMut<'_>,
    par: Par,
    tc: usize,
) {
    let (m, k, n) = (w.rows(), w.cols(), x.cols());
    let blocks = col_blocks(n, 128);
    let rp = w.row_ptr();
    // row chunks of whole blocks, balanced by entries
    let chunks: Vec<_> = chunks_for(m.div_ceil(CB), par.threads(), blocks.len(), |b| {
        rp[((b + 1) * CB).min(m)] - rp[b * CB] + 2 * CB
    })
    .into_iter()
    .map(|r| r.start * CB..(r.end * CB).min(m))
    .collect();
    let yp = SyncPtr(y.data().as_mut_ptr());
    let (ci, v, xd) = (w.col_idx(), w.values(), x.data());
    let key = call_key();
    let copies = blocks.len() > 1 || !(xd.as_ptr() as usize).is_multiple_of(64);
    let used_rows = if copies { w.rows_read() } else { None };
    run_grid(par, &chunks, &blocks, |r, c| {
        // an aligned slab (no line shift for the row-wise tiles after cs)
        with_packed(xd, k, n, c.start, c.end, key, false, used_rows, |slab| {
            let sw = c.end - c.start;
            let cs = sw / tc * tc;
            if cs > 0 {
                let rows = (r.start, r.end, m);
                outer_task(plan, pv, bias, slab, k, sw, tc, cs, yp, n, rows, c.start);
            }
            if cs < sw {
                spmm_task(
                    rp, ci, v, bias, slab, sw, cs, yp, n, r.start, r.end, c.start, c.end,
                );
            }
        })
    });
}

/// Below this many reads of each row of X that W reads (nnz over [`Csr::rows_read`]'s count), X is
/// one column block. An L0-pruned 512 x 512 layer at 98% (971 entries over 325 rows, 3 reads each;
/// of the DLMC layers only it and ResNet-50's first convolution at 98% read this few), where X was
/// cut into 1 MiB blocks, each copied (2026-11-30, `bench spmm --matrix F --n N`): 0.26-0.27 ->
/// 0.13 ms at N = 1024, 0.33 -> 0.20 at 2048, 0.62-0.65 -> 0.37-0.40 at 4096.
const FEW_READS: usize = 4;

/// Below this many reads of each row of X on average (nnz / K), a misaligned X whose rows are whole
/// cache lines is read in place rather than copied. DLMC transformer layers, N = 512, against
/// torch.sparse_csr (2026-11-30): in place, the 512 x 512 layer went from 0.73-0.84x to 1.28-1.47x
/// at 98% (10 reads per row), 0.92x to 1.17-1.26x at 95% (26) and 1.19x to 1.27-1.33x at 90% (51),
/// was even at 80% (102) and fell from 1.46-1.49x to 1.14-1.27x at 50% (256).
const IN_PLACE_READS: usize = 64;

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

multiversion!(fn spmm_task(rp: &[usize], ci: &[u32], v: &[f32], bias: &[f32], slab: &[f32], sw: usize,
                           cs: usize, y: SyncPtr, n: usize, r0: usize, r1: usize, c0: usize, c1: usize) => spmm_body);

/// Rows r0..r1, columns c0+cs..c1 of Y (row stride n) from `slab` = X[:, c0..c1] packed with row
/// stride `sw = c1 - c0`, plus `bias[i]` on row i when `bias` is not empty. With cs > 0 the slab
/// starts on a cache line (its last tile may overlap columns before cs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn spmm_body<const FMA: bool>(
    rp: &[usize],
    ci: &[u32],
    v: &[f32],
    bias: &[f32],
    slab: &[f32],
    sw: usize,
    cs: usize,
    y: SyncPtr,
    n: usize,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
) {
    let wide = FMA && super::simd::isa() == super::simd::Isa::Avx512;
    // X may be read in place at any alignment (`with_packed`'s `any_line_offset`): the wide tiles start where
    // every row's elements start a cache line, so no 16-lane load straddles two lines; the columns
    // before that and after the last whole 16 are covered by one 16-wide tile each, overlapping the
    // aligned ones (an element's sum runs over the same entries in the same order in either tile,
    // so both write the same value).
    let shift = line_shift(slab, sw);
    debug_assert!(
        !sw.is_multiple_of(16) || (slab.as_ptr() as usize + 4 * shift).is_multiple_of(64)
    );
    for i in r0..r1 {
        let (cols, vals) = (&ci[rp[i]..rp[i + 1]], &v[rp[i]..rp[i + 1]]);
        let b = bias.get(i).copied().unwrap_or(0.0);
        // SAFETY: row i, columns c0..c1 of Y (n columns, row-major) belong to this task alone:
        // tasks are disjoint (row chunk x column block), and the range lies inside Y.
        let out = unsafe { std::slice::from_raw_parts_mut(y.0.add(i * n + c0), c1 - c0) };
        let mut c = cs;
        if shift > 0 && cs == 0 {
            // sw is a multiple of 16 here (line_shift), so at least 16
            tile::<FMA, 16>(cols, vals, slab, sw, 0, b, &mut out[..16]);
            c = if sw == 16 { 16 } else { shift };
        }
        // AVX-512 (32 registers of 16 lanes): 128-wide tiles, 16 accumulators, half the per-entry
        // index work per multiply-add of the 64-wide tile that AVX2 (16 registers) is limited to.
        if wide {
            while c + 128 <= sw {
                tile::<FMA, 128>(cols, vals, slab, sw, c, b, &mut out[c..c + 128]);
                c += 128;
            }
        }
        while c + 64 <= sw {
            tile::<FMA, 64>(cols, vals, slab, sw, c, b, &mut out[c..c + 64]);
            c += 64;
        }
        while c + 16 <= sw {
            tile::<FMA, 16>(cols, vals, slab, sw, c, b, &mut out[c..c + 16]);
            c += 16;
        }
        if c < sw && sw >= 16 {
            // the last columns in one 16-wide tile ending at sw (overlapping the previous one)
            tile::<FMA, 16>(cols, vals, slab, sw, sw - 16, b, &mut out[sw - 16..]);
            c = sw;
        }
        while c < sw {
            tile::<FMA, 1>(cols, vals, slab, sw, c, b, &mut out[c..c + 1]);
            c += 1;
        }
    }
}

/// `out[0..T] = sum_p vals[p] * X[cols[p], c..c+T] + b`.
#[inline(always)]
fn tile<const FMA: bool, const T: usize>(
    cols: &[u32],
    vals: &[f32],
    x: &[f32],
    n: usize,
    c: usize,
    b: f32,
    out: &mut [f32],
) {
    let mut a0 = [0.0f32; T];
    let mut a1 = [0.0f32; T];
    let pairs = cols.len() / 2;
    let xrow = |j: u32| -> &[f32; T] {
        // SAFETY: j < K (Csr invariant; spmm checked X has K rows, so the slab has K rows of n
        // columns here) and c + T <= n, so the T elements lie inside x.
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
        out[l] = a0[l] + a1[l] + b;
    }
}

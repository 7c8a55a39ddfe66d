//! `spmm_24`: Y = W X with W in 2:4 form ([`Sparse24`]).
//!
//! Shapes: W (M, K) 2:4 (values (M, K/2) + metadata), X (K, N), Y (M, N). Work: M*K/2*N
//! multiply-adds, half of the dense GEMM's. Two kernels share a task's slab of X:
//! - full column tiles of 128 (AVX-512), 32 (AVX2) or 16 (portable) run the class kernel
//!   ([`super::spmm24_class`]): rows sorted by pattern, Y's tile in L1, about half the loads per
//!   multiply-add of a register tile;
//! - the columns left over (N below the class tile, or a slab's last columns) run the register tile
//!   here: 7 rows of W x T = 64 columns of Y with AVX-512 (28 of its 32 registers hold
//!   accumulators), and one tile of 16, 32, 48 or 64 columns for a row's last columns (overlapping
//!   the previous tile when wider than what is left); 4 rows x 16 columns elsewhere. For each group
//!   g of 4 along K, the four rows X[4g..4g+4, c..c+T] are read from cache and shared by the tile's
//!   rows, each of which picks its two rows by its metadata:
//!   `acc[r] += v0 * X[4g + i0] + v1 * X[4g + i1]`.
//!
//! Both sum an element's groups in the same order from zero and add the bias last, so a tile that
//! overlaps columns of the other kernel writes equal values.
//! At 3072 x 768 on the 2-core Xeon of 2026-11-30 (`bench spmm24`, docs/benchmarks.md): the
//! register tile alone was faster at N = 32-96 and 192 (a 64-wide last block), the class kernel at
//! N = 100, 128, 136, 300 and 512 (1.33-1.41x dense at N = 512 against 1.14-1.21x).
use super::grid::{
    SPMM24_SLAB_BYTES, SyncPtr, call_key, check_mm, chunks_for, col_block_for, col_blocks,
    l2_bytes, par_for_work, run_grid, with_packed,
};
use super::simd::{fmadd, multiversion};
use super::spmm24_class::{class_task, class_width};
use super::ytile::CB;
use crate::sparse24::meta_words;
use crate::{Result, Sparse24};
use lopper_tensor::{MatMut, MatRef, Par};

/// Rows per register tile: AVX-512 (7) and the other clones (4). On the 2 MiB-L2 Xeon of
/// 2026-11-30, 3072 x 768 x 512: 1.08-1.12x dense with 4 rows, 1.13-1.18x with 5, 1.19-1.24x with
/// 6, 1.21-1.25x with 7 (interleaved runs, docs/benchmarks.md). 8 x 64 would need all 32 registers.
const MR_WIDE: usize = 7;
const MR_NARROW: usize = 4;
// Row chunks are whole blocks of the class kernel, and whole multiples of both tile heights, so
// only the matrix's last rows are left to single-row tiles.
const _: () = assert!(CB.is_multiple_of(MR_WIDE * MR_NARROW));

/// spmm_24's column block for `tc`-wide class tiles: 128 columns while N has a class tile and X's
/// K x 128 slab fits in three quarters of L2 (1 MiB assumed where unknown); otherwise the register
/// tile's budget. 768 x 3072 x 512: 7.0-7.2 ms with a 1.5 MiB slab of 128 columns (2 MiB L2)
/// against 8.2 ms with 64 (which leaves every column to the register tile).
fn col_block_24(k: usize, n: usize, tc: usize) -> usize {
    let l2 = l2_bytes().unwrap_or(1 << 20);
    if n >= tc && k.saturating_mul(4 * 128) <= l2 / 4 * 3 {
        128
    } else {
        col_block_for(k, n, SPMM24_SLAB_BYTES)
    }
}

/// `y = w x`: W (M, K) 2:4, X (K, N), Y (M, N), overwritten.
pub fn spmm_24(w: &Sparse24, x: MatRef<'_>, y: MatMut<'_>, par: Par) -> Result<()> {
    spmm_24_impl(w, x, &[], y, par)
}

/// `y = w x + bias`: as [`spmm_24`], with `bias[i]` (M of them) added to every element of row i
/// as the row is stored (no second pass over Y).
pub fn spmm_24_bias(
    w: &Sparse24,
    x: MatRef<'_>,
    bias: &[f32],
    y: MatMut<'_>,
    par: Par,
) -> Result<()> {
    super::spmm::check_bias("spmm_24_bias", w.rows(), bias)?;
    spmm_24_impl(w, x, bias, y, par)
}

/// [`spmm_24`] with `bias` (one per row) or none (empty).
fn spmm_24_impl(
    w: &Sparse24,
    x: MatRef<'_>,
    bias: &[f32],
    mut y: MatMut<'_>,
    par: Par,
) -> Result<()> {
    check_mm("spmm_24", (w.rows(), w.cols()), &x, &y)?;
    let n = x.cols();
    if n == 0 || w.rows() == 0 {
        return Ok(());
    }
    if w.cols() == 0 {
        let (m, d) = (w.rows(), y.data());
        for i in 0..m {
            d[i * n..(i + 1) * n].fill(bias.get(i).copied().unwrap_or(0.0));
        }
        return Ok(());
    }
    let par = par_for_work(par, (w.rows() * (w.cols() / 2)).saturating_mul(n));
    let tc = class_width();
    let blocks = col_blocks(n, col_block_24(w.cols(), n, tc));
    // the class kernel's order and values, built at the first product that has a class tile
    let plan = blocks.iter().any(|b| b.len() >= tc).then(|| w.plan(par));
    // chunks in units of CB rows
    let units = w.rows().div_ceil(CB);
    let chunks: Vec<_> = chunks_for(units, par.threads(), blocks.len(), |_| 1)
        .into_iter()
        .map(|r| r.start * CB..(r.end * CB).min(w.rows()))
        .collect();
    let yp = SyncPtr(y.data().as_mut_ptr());
    let (v, m, xd, k, rows) = (w.values(), w.meta(), x.data(), w.cols(), w.rows());
    let key = call_key();
    run_grid(par, &chunks, &blocks, |r, c| {
        with_packed(xd, k, n, c.start, c.end, key, false, None, |slab| {
            let sw = c.end - c.start;
            // columns 0..cs of the slab in class tiles, the rest in register tiles
            let mut cs = 0;
            if let Some((p, pv)) = plan.filter(|_| sw >= tc) {
                cs = sw / tc * tc;
                let rows = (r.start, r.end, rows);
                class_task(pv, p, bias, slab, k, sw, tc, cs, yp, n, rows, c.start);
            }
            if cs < sw {
                spmm24_task(v, m, bias, slab, k, sw, cs, yp, n, r.start, r.end, c.start);
            }
        })
    });
    Ok(())
}

multiversion!(fn spmm24_task(v: &[f32], m: &[u16], bias: &[f32], slab: &[f32], k: usize, sw: usize,
                             cs: usize, y: SyncPtr, n: usize, r0: usize, r1: usize, c0: usize) => spmm24_body);

/// Rows r0..r1, columns c0+cs..c0+sw of Y (row stride n) from `slab` = X[:, c0..c0+sw] packed with
/// row stride sw (a last tile may overlap columns before cs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn spmm24_body<const FMA: bool>(
    v: &[f32],
    m: &[u16],
    bias: &[f32],
    slab: &[f32],
    k: usize,
    sw: usize,
    cs: usize,
    y: SyncPtr,
    n: usize,
    r0: usize,
    r1: usize,
    c0: usize,
) {
    // AVX-512 has 32 registers of 16 lanes: a 7 x 64 tile (28 accumulators) shares each group's
    // X rows across 7 rows of W and amortizes the metadata decode over 8 multiply-adds per row and
    // group; AVX2 (16 registers) and the portable clone use 4 x 16.
    let wide = FMA && super::simd::isa() == super::simd::Isa::Avx512;
    let mr = if wide { MR_WIDE } else { MR_NARROW };
    let mut c = cs;
    while c < sw {
        let t = tile_width(sw - c, sw, wide);
        // a tile wider than the columns left ends at sw, overlapping the previous one (each
        // element's sum runs in the same order in either tile: both write the same value)
        c = c.min(sw - t);
        let mut i = r0;
        while i < r1 {
            let rows = (r1 - i).min(mr);
            // tile::<FMA, R, T> at row `row` for the tile width t (tile_width's values)
            macro_rules! run {
                ($r:expr, $row:expr) => {
                    match t {
                        64 => tile::<FMA, $r, 64>(v, m, bias, slab, k, sw, y, n, $row, c, c0),
                        48 => tile::<FMA, $r, 48>(v, m, bias, slab, k, sw, y, n, $row, c, c0),
                        32 => tile::<FMA, $r, 32>(v, m, bias, slab, k, sw, y, n, $row, c, c0),
                        16 => tile::<FMA, $r, 16>(v, m, bias, slab, k, sw, y, n, $row, c, c0),
                        _ => tile::<FMA, $r, 1>(v, m, bias, slab, k, sw, y, n, $row, c, c0),
                    }
                };
            }
            if rows == MR_WIDE && wide {
                run!(MR_WIDE, i);
            } else if rows == MR_NARROW && !wide {
                run!(MR_NARROW, i);
            } else {
                for row in i..i + rows {
                    run!(1, row);
                }
            }
            i += rows;
        }
        c += t;
    }
}

/// Width of the next column tile with `width` of a slab's `sw` columns left: 64 on AVX-512 while
/// 64 are left; then one tile of the rest rounded up to 16, 32, 48 or 64 (AVX-512; 16 elsewhere),
/// which overlaps the previous tile when wider than the rest; single columns only when the whole
/// slab is narrower than 16. At N = 100 this is one 64- and one 48-wide tile, where 16-wide tiles
/// (two multiply-adds per metadata decode and value broadcast) ran at 0.7x dense.
fn tile_width(width: usize, sw: usize, wide: bool) -> usize {
    if wide && width >= 64 {
        64
    } else if sw < 16 {
        1
    } else if wide {
        width.next_multiple_of(16).min(sw / 16 * 16)
    } else {
        16
    }
}

/// Y[i..i+R, c0+c..c0+c+T] = W[i..i+R, :] X[:, c0+c..c0+c+T], X read from the packed slab
/// (row stride sw).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const FMA: bool, const R: usize, const T: usize>(
    v: &[f32],
    m: &[u16],
    bias: &[f32],
    slab: &[f32],
    k: usize,
    sw: usize,
    y: SyncPtr,
    n: usize,
    i: usize,
    c: usize,
    c0: usize,
) {
    let half = k / 2;
    let mw = meta_words(k);
    // this tile's rows of values (K/2 each) and metadata (mw words each)
    let vr: [&[f32]; R] = std::array::from_fn(|r| &v[(i + r) * half..(i + r + 1) * half]);
    let mr: [&[u16]; R] = std::array::from_fn(|r| &m[(i + r) * mw..(i + r + 1) * mw]);
    let mut acc = [[0.0f32; T]; R];
    let xrow = |row: usize| -> &[f32; T] {
        // SAFETY: row < K (a 2:4 index is 4g + p with p < 4 and g < K/4) and c + T <= sw, and the
        // slab holds K rows of sw elements.
        unsafe { &*(slab.as_ptr().add(row * sw + c) as *const [f32; T]) }
    };
    let groups = k / 4;
    for word in 0..mw {
        let codes: [u16; R] = std::array::from_fn(|r| mr[r][word]);
        for s in 0..(groups - 4 * word).min(4) {
            let g = 4 * word + s;
            for r in 0..R {
                let code = (codes[r] >> (4 * s)) as usize;
                let (x0, x1) = (xrow(4 * g + (code & 3)), xrow(4 * g + ((code >> 2) & 3)));
                // SAFETY: g < K/4, so 2g + 1 < K/2, the length of a row of values.
                let (w0, w1) =
                    unsafe { (*vr[r].get_unchecked(2 * g), *vr[r].get_unchecked(2 * g + 1)) };
                for l in 0..T {
                    acc[r][l] = fmadd::<FMA>(w1, x1[l], fmadd::<FMA>(w0, x0[l], acc[r][l]));
                }
            }
        }
    }
    for r in 0..R {
        // SAFETY: rows i..i+R and columns c..c+T of Y belong to this task alone (disjoint grid).
        let out = unsafe { std::slice::from_raw_parts_mut(y.0.add((i + r) * n + c0 + c), T) };
        let b = bias.get(i + r).copied().unwrap_or(0.0);
        for l in 0..T {
            out[l] = acc[r][l] + b;
        }
    }
}

//! Y's tile in L1 for the kernels that share each row of X across a block of rows of W
//! (spmm_24's class kernel, spmm's outer-product kernel): CB rows x T columns, zeroed, summed into
//! by the kernel, then stored to Y with the bias. Y's lines are fetched into L2 while the kernel
//! runs, so that the final stores do not wait for them (without: 1.15x dense at 3072 x 768 x 512
//! on one thread for spmm_24, with: 1.23-1.41x; `perf` had 15% of the samples on the store).
//! [`run_blocks`] walks a task's column tiles and blocks of rows for either kernel ([`BlockSum`]).
use super::grid::SyncPtr;

/// Rows of W per block (a multiple of spmm_24's register tiles of 7 and 4 rows). Y's tile is
/// (CB, T) f32: 28 KiB at T = 128, of the 48 KiB L1 of the 2026-11-30 Xeon. spmm_24 at
/// 3072 x 768 x 512 on one thread: 1.15-1.16x dense with 32 rows, 1.21-1.26x with 64, 1.24-1.25x
/// with 48, 0.95-1.02x with 128 (64 KiB, beyond L1), docs/benchmarks.md.
pub(crate) const CB: usize = 56;
// a row's place in its block is a u8
const _: () = assert!(CB <= 256);

/// Where a block's tile goes: rows r0..r0+rb and columns col..col+T of Y (row stride n).
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) y: SyncPtr,
    pub(crate) n: usize,
    pub(crate) r0: usize,
    pub(crate) rb: usize,
    pub(crate) col: usize,
}

/// The tile, aligned so that its rows of 16 lanes are whole cache lines.
#[repr(align(64))]
pub(crate) struct Tile<const T: usize>(pub(crate) [[f32; T]; CB]);

impl<const T: usize> Tile<T> {
    #[inline(always)]
    pub(crate) fn zeros() -> Self {
        Tile([[0.0; T]; CB])
    }

    /// Fetches into L2 the share `step` of `steps` of the destination's lines (call it for every
    /// step of the kernel's loop).
    #[inline(always)]
    pub(crate) fn prefetch(d: Dest, step: usize, steps: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let lines = d.rb * T.div_ceil(16);
            for l in step * lines / steps..(step + 1) * lines / steps {
                let (r, q) = (l / T.div_ceil(16), l % T.div_ceil(16));
                // SAFETY: r < rb and 16q < T: an element of the caller's part of Y (a prefetch
                // does not fault in any case).
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T1>(
                        d.y.0.add((d.r0 + r) * d.n + d.col + 16 * q) as *const i8
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (d, step, steps);
    }

    /// Stores the tile's first rb rows to Y, adding `bias[r0 + r]` (none when `bias` is empty).
    /// The caller owns the destination (a disjoint task of the grid).
    #[inline(always)]
    pub(crate) fn store(&self, d: Dest, bias: &[f32]) {
        for r in 0..d.rb {
            // SAFETY: rows r0..r0+rb and columns col..col+T of Y belong to the caller's task alone
            // (disjoint grid), and lie inside Y.
            let out =
                unsafe { std::slice::from_raw_parts_mut(d.y.0.add((d.r0 + r) * d.n + d.col), T) };
            let b = bias.get(d.r0 + r).copied().unwrap_or(0.0);
            for l in 0..T {
                out[l] = self.0[r][l] + b;
            }
        }
    }
}

/// A kernel that sums one block of rows of W over one tile of T columns of X's slab into Y's tile
/// (spmm_24's class kernel, spmm's outer-product kernel).
pub(crate) trait BlockSum {
    /// Adds the products of the block `d` names (rows d.r0..d.r0+d.rb of W) over columns c..c+T
    /// of the slab into `acc`, calling [`Tile::prefetch`] on `d` at each step of its loop.
    fn sum<const FMA: bool, const T: usize>(&self, d: Dest, c: usize, acc: &mut Tile<T>);
}

/// Rows `rows.0..rows.1` (starting on a block) of the `rows.2` rows of W, columns c0..c0+cs of Y
/// (row stride n) in tiles of tc (128, 32 or 16; cs a multiple of it): each block's tile zeroed,
/// summed by `kern`, then stored with `bias` (none when empty).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_blocks<K: BlockSum, const FMA: bool>(
    kern: &K,
    bias: &[f32],
    y: SyncPtr,
    n: usize,
    tc: usize,
    cs: usize,
    rows: (usize, usize, usize),
    c0: usize,
) {
    debug_assert!(rows.0.is_multiple_of(CB) && cs.is_multiple_of(tc));
    for c in (0..cs).step_by(tc) {
        for r0 in (rows.0..rows.1).step_by(CB) {
            let d = Dest {
                y,
                n,
                r0,
                rb: (rows.2 - r0).min(CB),
                col: c0 + c,
            };
            match tc {
                128 => one_block::<K, FMA, 128>(kern, d, c, bias),
                32 => one_block::<K, FMA, 32>(kern, d, c, bias),
                _ => one_block::<K, FMA, 16>(kern, d, c, bias),
            }
        }
    }
}

#[inline(always)]
fn one_block<K: BlockSum, const FMA: bool, const T: usize>(
    kern: &K,
    d: Dest,
    c: usize,
    bias: &[f32],
) {
    let mut acc = Tile::<T>::zeros();
    kern.sum::<FMA, T>(d, c, &mut acc);
    acc.store(d, bias);
}

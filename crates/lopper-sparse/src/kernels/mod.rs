//! CPU sparse kernels: rayon-parallel over a 2-D grid of (row chunk, column block) tasks whose row
//! chunks are balanced by stored entries (a row 10x the mean only lengthens its chunk, and a single
//! huge row is still split across column blocks), register-tiled over N, vectorized by the compiler
//! inside `#[target_feature]` clones chosen at run time (AVX-512, AVX2+FMA, or portable).
//! spmm, spmm_t and spmm_24 read X, and sddmm reads B, through a per-thread copy of the task's
//! column block that starts on a 64-byte boundary, so no 16-lane load straddles two cache lines and
//! a power-of-two row stride does not pile the rows into a few cache sets (a thread copies a block
//! once per call; an aligned operand that is its own block is read in place). spmm copies only the
//! rows of X that W reads ([`crate::Csr::rows_read`]). These loops are bound by loads: one per
//! FMA, from the L2-resident slab; docs/benchmarks.md has the probes. The fused backward
//! `spmm_t_sddmm` makes each load feed two FMAs (dX and dW of one entry).
//!
//! Two kernels turn this around for their 128-wide column tiles (AVX-512): a row of X goes into
//! registers once and is shared by every row of a block of W that reads it, and Y's tile for the
//! block sits in L1 (loaded and stored per multiply-add, all in L1): spmm_24's class kernel (rows
//! sorted by their 2:4 code, group by group) and spmm's outer-product kernel (entries ordered by
//! column within each block of rows, at densities of 15% or more). Each keeps its order of W and
//! a copy of the values in that order with the matrix (`cache`).
//!
//! With `Par::Rayon(0)` (the current pool), a product of fewer than 2^19 multiply-adds runs on the
//! calling thread alone: waking the pool costs more than a second thread saves. An explicit
//! `Par::Rayon(n)` is run on n threads whatever the size.
//!
//! Every kernel computes in f32 and has an f64 dense reference in [`crate::reference`].
mod backward;
mod cache;
mod grid;
mod sddmm;
pub mod simd;
mod spmm;
mod spmm24;
mod spmm24_class;
mod spmm_outer;
mod ytile;

pub use backward::spmm_t_sddmm;
pub(crate) use cache::KernelCache;
pub use sddmm::{sddmm, sddmm_add};
pub use spmm::{spmm, spmm_bias, spmm_t, spmm_t_with};
pub(crate) use spmm_outer::{Outer, outer_used};
pub use spmm24::{spmm_24, spmm_24_bias};
pub(crate) use spmm24_class::Plan;

/// Width (f32 lanes) of the register tile over N that the kernels use.
pub const N_TILE: usize = 64;

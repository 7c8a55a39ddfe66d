//! lopper-lowrank: describe a big weight with a few factors.
//!
//! - [`svd()`] / [`truncated_svd`]: thin SVD through faer (f32 or f64), the Eckart-Young optimum.
//! - [`rsvd()`]: randomized SVD (Halko et al.) with oversampling and power iterations ([`RsvdParams`]).
//! - [`rank`]: rank selection (fixed, energy fraction, parameter/FLOP ratio) and per-layer reports.
//! - [`LowRank`]: factors U (M, r), V (r, K) with `Y = U (V X)` products, backward, FLOP accounting.
//!
//! Every algorithm takes views ([`lopper_tensor::MatRef`]), an explicit [`lopper_tensor::Par`], and
//! tunables with defaults. Errors are typed ([`Error`]); bad input never panics.

mod error;
pub mod lowrank;
pub mod rank;
pub mod rsvd;
pub mod svd;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use lowrank::{LowRank, LowRankGrads};
pub use rank::{LayerReport, Method, RankRule, compress_matrix, select_rank};
pub use rsvd::{RsvdParams, rsvd};
pub use svd::{Precision, Svd, optimal_rel_error, rel_frobenius_error, svd, truncated_svd};

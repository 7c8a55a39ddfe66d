//! lopper-lowrank: describe a big weight with a few factors.
//!
//! - [`svd()`] / [`truncated_svd`]: thin SVD through faer (f32 or f64), the Eckart-Young optimum.
//! - [`rsvd()`]: randomized SVD (Halko et al.) with oversampling and power iterations ([`RsvdParams`]).
//! - [`rank`]: rank selection (fixed, energy fraction, parameter/FLOP ratio) and per-layer reports.
//! - [`LowRank`]: factors U (M, r), V (r, K) with `Y = U (V X)` products, backward, FLOP accounting.
//! - [`lora`]: LoRA layers (frozen base + B A, merge/unmerge, PEFT-named safetensors adapters).
//! - [`slr`]: sparse + low-rank W ~ S + U V by alternating projections.
//! - [`tucker`]: Tucker (HOSVD, HOOI, ranks by tolerance) for 3- and 4-way tensors.
//! - [`tt`]: tensor-train (TT-SVD with ranks by tolerance) and TT-matrices.
//! - [`galore`]: GaLore gradient projection with Adam state in the rank-r subspace.
//!
//! Every algorithm takes views ([`lopper_tensor::MatRef`]), an explicit [`lopper_tensor::Par`], and
//! tunables with defaults. Errors are typed ([`Error`]); bad input never panics.

mod error;
pub mod galore;
pub mod lora;
pub mod lowrank;
pub mod rank;
pub mod rsvd;
pub mod slr;
pub mod svd;
#[cfg(test)]
mod testutil;
pub mod tt;
pub mod tucker;

pub use error::{Error, Result};
pub use galore::{GaloreAdam, GaloreParams, GradientStep};
pub use lora::{LoraAdapter, LoraLinear, MergeReport, load_adapters, save_adapters};
pub use lowrank::{LowRank, LowRankGrads};
pub use rank::{LayerReport, Method, RankRule, compress_matrix, select_rank};
pub use rsvd::{RsvdParams, rsvd};
pub use slr::{SlrParams, SparseLowRank, sparse_plus_lowrank};
pub use svd::{Precision, Svd, optimal_rel_error, rel_frobenius_error, svd, truncated_svd};
pub use tt::{TensorTrain, TtMatrix, tt_svd};
pub use tucker::{Tucker, hooi, hosvd, hosvd_tol};

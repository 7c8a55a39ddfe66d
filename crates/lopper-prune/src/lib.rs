//! lopper-prune: deciding what to drop and when, behind small traits that a trainer drives with
//! plain data ([`Param`]: name, shape, `&mut [f32]` values, optional gradient).
//!
//! - [`criterion`]: how important each weight is ([`Criterion`]: magnitude, movement, Taylor,
//!   SNIP, Wanda, random).
//! - [`granularity`]: what goes together ([`Granularity`]: unstructured, row-balanced, N:M, rows,
//!   columns, blocks, attention heads, conv channels), with exact counts and documented ties.
//! - [`scope`]: which tensors and where the budget goes ([`Scope`]: per layer or global with a
//!   minimum density; include/exclude regexes; 1-D tensors and embeddings excluded by default).
//! - [`schedule`]: when ([`Schedule`]: one-shot, gradual polynomial) and the [`Pruner`] hook;
//!   [`lottery`]: iterative magnitude pruning with rewinding.
//! - [`dst`]: dynamic sparse training (SET, RigL; uniform and ERK layouts).
//! - [`permute`]: N:M channel permutation; [`stats`]: density, kept magnitude, FLOPs saved.
//! - [`checkpoint`]: one-shot pruning of whole safetensors checkpoints and their description.
//! - [`store`]: the compressed safetensors store (CSR / N:M parts + JSON manifest) and its reader.
//! - [`param`]: the [`Param`] view, masks, and hand-off to `lopper_sparse::Csr` / `Sparse24`.
//!
//! Ties everywhere: larger score first, then the lower index (flat row-major index within a
//! tensor; in global scope the earlier tensor first), NaN as the largest. Counts:
//! `round_half_even((1 - s) * n)`, Python's `round`.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod criterion;
pub mod dst;
mod error;
pub mod granularity;
pub mod lottery;
pub mod param;
pub mod permute;
pub mod schedule;
pub mod scope;
pub mod stats;
pub mod store;

pub use criterion::Criterion;
pub use error::{Error, Result, check_sparsity};
pub use granularity::Granularity;
pub use lottery::LotteryTicket;
pub use param::{Mask, Param, ParamRef};
pub use schedule::{Pruner, Schedule};
pub use scope::{Scope, ScopeKind};

#[cfg(test)]
mod tests;

//! lopper-nn: layers with explicit forward and backward, llm.c style.
//!
//! Conventions, stated once:
//! - Activations are row-major `(rows, features)`, e.g. `(B*T, C)`; shapes are written in comments
//!   next to every product.
//! - **Parameter gradients are accumulated (`+=`); activation gradients are overwritten (`=`).**
//!   Call `zero_grad` before each backward (or don't, to accumulate over micro-batches).
//! - Layers own their parameters and gradients; models own the activation buffers, allocated on the
//!   first forward for a batch shape and reused by every later step (no allocation in the step).
//! - Bad input (shapes, token ids) is an [`Error`] naming the layer, never a panic.
//!
//! Modules: [`linear`] (Linear with a [`Weight`] that is Dense, Masked, Csr, Sparse24, LowRank or
//! Lora), [`embedding`], [`layernorm`], [`activation`] (GELU tanh, ReLU), [`attention`] (causal
//! multi-head), [`loss`] (softmax cross-entropy), models [`mlp`] and [`gpt`], and [`flops`]
//! (executed vs dense-equivalent FLOP accounting).

pub mod activation;
pub mod attention;
mod attn_panels;
pub mod embedding;
mod error;
pub mod flops;
pub mod gpt;
mod kernels;
pub mod layernorm;
pub mod linear;
pub mod loss;
pub mod mlp;
mod panels;
pub mod precision;
mod util;
#[cfg(target_arch = "x86_64")]
mod vec16;
mod weight;

pub use error::{Error, Result};
pub use flops::Flops;
pub use gpt::{Gpt, GptConfig};
pub use kernels::GemmThreads;
pub use linear::Linear;
pub use mlp::{Mlp, MlpActivation};
pub use precision::Precision;
pub use weight::{LoraBase, Weight, WeightKind};

/// One trainable parameter as an optimizer sees it: its values (for a Csr or 2:4 weight only the
/// stored values), its gradient (same length), and, for masked weights, the mask that must stay true.
pub struct ParamMut<'a> {
    /// Dotted name, e.g. `h.0.attn.qkv.weight`.
    pub name: String,
    /// The values to update in place.
    pub values: &'a mut [f32],
    /// The gradient of the loss with respect to `values`.
    pub grad: &'a [f32],
    /// For a Masked weight: entries that must stay zero where false.
    pub mask: Option<&'a [bool]>,
}

//! lopper-tensor: the dense side of lopper.
//!
//! - [`Tensor`]: dense, row-major, contiguous, one of three dtypes ([`DType`]: f32, f16, bf16).
//! - [`MatRef`] / [`MatMut`]: borrowed row-major matrix views that kernels take (faer style).
//! - [`gemm`](mod@gemm): dense GEMM through `faer` (never hand-rolled), with transposed operands
//!   and an explicit parallelism argument ([`Par`]): on several threads C is cut into one slab of
//!   columns or rows per rayon thread, each a single-threaded faer GEMM.
//! - [`ops`]: the elementwise basics the sparse and nn crates need.
//! - [`io`]: safetensors (all three dtypes, names and metadata kept) and `.npy` (f32, f16; C order), with
//!   atomic writes (temp file + rename) so that a failed write never leaves a half-written file.
//!
//! - [`mem`]: checked allocation of buffers whose size comes from a file or an argument.
//!
//! Errors are typed ([`Error`]) and name the operation or file they come from.

#[cfg(feature = "cuda")]
pub mod cuda;
mod dtype;
mod error;
pub mod gemm;
pub mod io;
pub mod mem;
pub mod ops;
mod par;
mod tensor;
mod view;

pub use dtype::DType;
pub use error::{Error, Result};
pub use gemm::{GemmSplit, Transpose, gemm, gemm_bias, gemm_with, matmul};
pub use par::Par;
pub use tensor::{Storage, Tensor};
pub use view::{MatMut, MatRef};

pub use half::{bf16, f16};

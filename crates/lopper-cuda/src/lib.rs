//! lopper-cuda: the GPU layer of lopper.
//!
//! Without the `cuda` feature this crate is empty except for [`is_available`] (always `false`), so the
//! workspace builds and tests on machines with no CUDA at all. With `--features cuda`:
//!
//! - [`Gpu`]: one CUDA context and stream per device, opened once ([`Gpu::get`]); the kernels of
//!   `kernels/*.cu`, compiled by `build.rs` (sm_80 and sm_90a cubins plus PTX) and embedded, are
//!   loaded lazily, each module once per device; upload, download and allocation of device buffers
//!   ([`CudaSlice`]).
//! - One typed launcher per kernel: [`csr_spmm`], [`csr_sddmm`], [`gather_f32`], [`sparse24_compress`],
//!   [`sparse24_spmm`], [`mask_apply`], [`masked_adamw`]. Each checks shapes, dtypes and alignment,
//!   computes the grid, and returns a typed [`Error`]; the launch is its only `unsafe`.
//! - Baselines: dense GEMM through cuBLAS ([`gemm`], f32 and bf16) and CSR SpMM through cuSPARSE
//!   ([`CusparseSpmm`]).
//!
//! The crate knows no `Tensor` or `Csr` type: it takes raw slices (row-major matrices, CSR parts),
//! and lopper-tensor / lopper-sparse convert their types at their `cuda` feature's boundary.
// The items linked above exist only with the `cuda` feature; without it (the default, and what
// `cargo doc --workspace` builds) their links cannot resolve.
#![cfg_attr(not(feature = "cuda"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "cuda")]
mod blas;
#[cfg(feature = "cuda")]
mod csr;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod error;
#[cfg(feature = "cuda")]
mod sparse24;

#[cfg(feature = "cuda")]
pub use blas::{CusparseSpmm, GemmDtype, gemm};
#[cfg(feature = "cuda")]
pub use csr::{CsrDev, Dtype, PermDev, SpmmVariant, csr_sddmm, csr_spmm, gather_f32};
#[cfg(feature = "cuda")]
pub use device::{Gpu, KernelInfo, kernel_names};
#[cfg(feature = "cuda")]
pub use elementwise::{AdamW, mask_apply, masked_adamw};
#[cfg(feature = "cuda")]
pub use error::{Error, Result};
#[cfg(feature = "cuda")]
pub use sparse24::{
    Sparse24Dev, Spmm24Tile, fragment_words, sparse24_compress, sparse24_spmm, sparse24_spmm_with,
};

#[cfg(feature = "cuda")]
pub use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
#[cfg(feature = "cuda")]
pub use half::bf16;

/// Whether a CUDA device can be used: the crate was built with the `cuda` feature, the driver
/// library loads, and at least one device is present. Never panics.
pub fn is_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        device::device_count() > 0
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// The line GPU tests print when they skip for want of a device.
pub const SKIP_MESSAGE: &str = "skipped: no CUDA device";

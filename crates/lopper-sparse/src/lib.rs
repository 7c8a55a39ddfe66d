//! lopper-sparse: sparse weights whose compute really shrinks with density.
//!
//! - [`Csr`]: validated compressed sparse rows (every constructor checks the invariants and names the
//!   first violation), conversions from dense (threshold, mask, exact top-k magnitude) and back, and a
//!   [`CsrTranspose`] that keeps the value permutation so a values-only update re-transposes in O(nnz).
//!   `spmm`'s outer-product kernel (AVX-512, density of 15% or more) keeps its column order and a
//!   copy of the values in that order with the matrix ([`Csr::prepare`]).
//! - [`Sparse24`]: NVIDIA's 2:4 format (values `[M, K/2]` + 2-bit index metadata), with the reorder
//!   into the `mma.sp` m16n8k32 fragment layout the GPU kernel reads. The CPU `spmm_24` keeps its
//!   row order and a copy of the values in that order with the matrix ([`Sparse24::prepare`]).
//! - [`io`]: DLMC `.smtx` and Matrix Market `.mtx` readers and writers.
//! - [`kernels`]: rayon-parallel, nnz-balanced CPU kernels `spmm`, `spmm_t`, `sddmm` (and
//!   `sddmm_add`, accumulating), `spmm_24`, each with an f64 dense reference in
//!   [`reference`](mod@reference).
mod csr;
mod error;
mod fragments;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod reference;
mod sparse24;
mod tensor_ops;

pub use csr::{Csr, CsrTranspose};
pub use error::{Error, Result};
pub use fragments::Sparse24Fragments;
pub use kernels::{
    sddmm, sddmm_add, spmm, spmm_24, spmm_24_bias, spmm_bias, spmm_t, spmm_t_sddmm, spmm_t_with,
};
pub use sparse24::Sparse24;

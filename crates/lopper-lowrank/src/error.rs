//! Errors of lopper-lowrank. Every variant names the operation and what was wrong.

/// Errors of lopper-lowrank.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the tensor layer (shapes of views, dtypes, file I/O).
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    /// An error of the sparse layer (CSR construction).
    #[error(transparent)]
    Sparse(#[from] lopper_sparse::Error),
    /// Operand shapes do not fit the operation.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The operation that failed.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// An argument (rank, fraction, tolerance, ...) is out of its valid range.
    #[error("{op}: invalid argument: {detail}")]
    Invalid {
        /// The operation that failed.
        op: &'static str,
        /// Which argument and why.
        detail: String,
    },
    /// faer's SVD did not converge (in practice: NaN or infinite input).
    #[error("{op}: SVD of a {rows}x{cols} matrix did not converge (NaN or Inf in the input?)")]
    NoConvergence {
        /// The operation that failed.
        op: &'static str,
        /// Rows of the decomposed matrix.
        rows: usize,
        /// Columns of the decomposed matrix.
        cols: usize,
    },
    /// A file holds tensors that do not form what was asked for (e.g. a LoRA adapter without B).
    #[error("{path}: {detail}")]
    Format {
        /// The file.
        path: String,
        /// What is missing or inconsistent.
        detail: String,
    },
}

/// `Result` with lopper-lowrank's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            detail: detail.into(),
        }
    }
}

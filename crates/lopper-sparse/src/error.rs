use std::path::PathBuf;

/// Errors of lopper-sparse. Each names the operation or file and the first violation found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    /// A CSR structure violates an invariant (offsets, indices, lengths).
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// A 2:4 structure or a matrix that should be 2:4 is not.
    #[error("invalid 2:4: {0}")]
    Invalid24(String),
    /// Operand shapes do not fit.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A bad argument (threshold, count, ...).
    #[error("{op}: invalid argument: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// A file is malformed: path, line (1-based, 0 when not line-based) and what is wrong.
    #[error("{}:{line}: malformed {format} file: {detail}", path.display())]
    Format {
        path: PathBuf,
        format: &'static str,
        line: usize,
        detail: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with lopper-sparse's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape_err(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape {
        op,
        detail: detail.into(),
    }
}

/// An output with one value per stored entry: an error naming `op` when `len` is not `nnz`.
pub(crate) fn check_nnz(op: &'static str, what: &str, len: usize, nnz: usize) -> Result<()> {
    if len != nnz {
        return Err(shape_err(
            op,
            format!("{what} has {len} elements, the pattern has {nnz} entries"),
        ));
    }
    Ok(())
}

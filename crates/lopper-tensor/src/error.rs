use std::path::PathBuf;

/// Errors of lopper-tensor. Every variant names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Operand shapes do not fit the operation.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// Operand dtype is not the one the operation needs.
    #[error("{op}: expected dtype {expected}, got {got}")]
    DType {
        op: &'static str,
        expected: crate::DType,
        got: crate::DType,
    },
    /// An argument is out of its valid range.
    #[error("{op}: invalid argument: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A buffer whose size comes from a file or an argument cannot fit in memory ([`crate::mem`]).
    #[error("{0}")]
    Memory(String),
    /// A file is not in the format it claims to be in.
    #[error("{}: malformed {format} file: {detail}", path.display())]
    Format {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
}

/// `Result` with lopper-tensor's [`Error`].
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

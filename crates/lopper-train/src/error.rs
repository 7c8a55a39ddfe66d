//! lopper-train's error type: every variant names what and where.
use crate::data::DataError;

/// Errors of lopper-train.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nn(#[from] lopper_nn::Error),
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    #[error(transparent)]
    Sparse(#[from] lopper_sparse::Error),
    #[error(transparent)]
    Prune(#[from] lopper_prune::Error),
    #[error(transparent)]
    Energy(#[from] lopper_energy::Error),
    #[error(transparent)]
    Data(#[from] DataError),
    /// A recipe that does not parse or does not make sense: the file, the key and its line.
    #[error("{path}:{line}: {key}: {detail}")]
    Recipe {
        path: String,
        line: usize,
        key: String,
        detail: String,
    },
    /// A checkpoint that is missing, malformed or does not fit the model.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: String, detail: String },
    /// A bad argument or state (names the component).
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// File-system errors, with the path.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with lopper-train's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error::Invalid`].
pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        detail: detail.into(),
    }
}

/// An [`Error::Io`] for `path`.
pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.as_ref().display().to_string(),
        source,
    }
}

/// Errors of lopper-nn. Shape errors name the layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of a lopper-tensor operation (GEMM, views).
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    /// An error of a lopper-sparse kernel or conversion.
    #[error(transparent)]
    Sparse(#[from] lopper_sparse::Error),
    /// An input or buffer does not have the shape the layer needs.
    #[error("{layer}: shape mismatch: {detail}")]
    Shape {
        /// The layer (or function) that found it.
        layer: String,
        /// What was expected and what came.
        detail: String,
    },
    /// A bad argument: token id out of range, rank 0, unknown parameter name, ...
    #[error("{layer}: invalid argument: {detail}")]
    Invalid {
        /// The layer (or function) that found it.
        layer: String,
        /// What was wrong.
        detail: String,
    },
}

/// `Result` with lopper-nn's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape(layer: &str, detail: impl Into<String>) -> Error {
    Error::Shape {
        layer: layer.to_string(),
        detail: detail.into(),
    }
}

pub(crate) fn invalid(layer: &str, detail: impl Into<String>) -> Error {
    Error::Invalid {
        layer: layer.to_string(),
        detail: detail.into(),
    }
}

/// `Err` naming `layer` unless `len == want`.
pub(crate) fn check_len(layer: &str, what: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(shape(
            layer,
            format!("{what} has {len} elements, expected {want}"),
        ));
    }
    Ok(())
}

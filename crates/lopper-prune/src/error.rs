//! The typed error of lopper-prune.

/// Errors of lopper-prune. Every variant names what failed and where (tensor, argument, file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the dense layer (shapes, dtypes, file I/O, malformed safetensors).
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    /// An error of the sparse layer (CSR or 2:4 construction).
    #[error(transparent)]
    Sparse(#[from] lopper_sparse::Error),
    /// An argument is out of its valid range (sparsity outside [0, 1), N >= M, zero frequency, ...).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The argument, e.g. `sparsity`.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A granularity does not fit the shape of a tensor (e.g. last axis not a multiple of M).
    #[error("tensor {tensor:?} of shape {shape:?}: {detail}")]
    Pattern {
        /// Tensor name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why the pattern does not fit.
        detail: String,
    },
    /// A tensor-name regex is malformed.
    #[error("bad regex {pattern:?}: {source}")]
    Regex {
        /// The regex as given.
        pattern: String,
        /// The parser's complaint.
        #[source]
        source: regex::Error,
    },
    /// A tensor-name regex (include or exclude) matches none of the tensors.
    #[error("--{which} regex {pattern:?} matches no tensor (names: {sample})")]
    NoMatch {
        /// `include` or `exclude`.
        which: &'static str,
        /// The regex as given.
        pattern: String,
        /// A few of the tensor names, to help fix the regex.
        sample: String,
    },
    /// The scope selects no tensor at all.
    #[error("nothing to prune: {0}")]
    NothingSelected(String),
    /// Parameters, grads or masks given to a stateful pruner disagree with what it was built for.
    #[error("{op}: {detail}")]
    Mismatch {
        /// The operation.
        op: &'static str,
        /// What disagrees.
        detail: String,
    },
    /// A compressed store's manifest or tensors are inconsistent.
    #[error("{path}: bad lopper compressed store: {detail}")]
    Store {
        /// File (or `<memory>`).
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// `Result` with lopper-prune's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }
    pub(crate) fn pattern(tensor: &str, shape: &[usize], detail: impl Into<String>) -> Self {
        Error::Pattern {
            tensor: tensor.to_string(),
            shape: shape.to_vec(),
            detail: detail.into(),
        }
    }
    pub(crate) fn mismatch(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Mismatch {
            op,
            detail: detail.into(),
        }
    }
}

/// Checks a target sparsity: finite and in `[0, 1)`.
pub fn check_sparsity(s: f64) -> Result<()> {
    if s.is_finite() && (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(Error::invalid(
            "sparsity",
            format!("{s} is outside [0, 1) (0 keeps everything; 1 would remove every weight)"),
        ))
    }
}

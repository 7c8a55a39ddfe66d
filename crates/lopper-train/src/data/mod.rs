//! Data: where batches come from. [`DataSource`] is what the trainer asks; loaders for byte text,
//! the UCI digits and IDX files (MNIST, Fashion-MNIST) implement it.
use crate::Batch;

/// Errors of the data loaders: malformed or missing files, named with the path and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file is not what its format says (bad magic, truncated, dimensions that do not fit).
    #[error("{path}: {detail}")]
    Format { path: String, detail: String },
    /// A bad argument (split fraction, batch size larger than the data, ...).
    #[error("data: {0}")]
    Invalid(String),
    /// File-system errors, with the path.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A source of batches. The training batch of a step is a pure function of the source's seed and
/// the step, so a resumed run sees exactly the batches the uninterrupted run would have seen.
pub trait DataSource: Send {
    /// The training batch for optimizer step `step` (0-based).
    fn train_batch(&self, step: u64) -> Result<Batch, DataError>;
    /// The fixed validation batches (the same every call).
    fn val_batches(&self) -> Result<Vec<Batch>, DataError>;
    /// One line for logs and reports: what the data is, its size and split.
    fn describe(&self) -> String;
}

//! Data: where batches come from. [`DataSource`] is what the trainer asks; loaders for byte text,
//! the UCI digits and IDX files (MNIST, Fashion-MNIST) implement it.
//!
//! - [`text`]: [`TextData`] (bytes are tokens, vocabulary 256; the embedded King James text) and
//!   [`TextSource`] (random windows for training, fixed evenly spaced windows for validation).
//! - [`images`]: [`Images`] (feature rows in [0, 1] with class labels), a stratified
//!   [`Images::split`], and [`ImageSource`] (epoch-shuffled feature batches).
//! - [`digits`]: the UCI optical digits embedded from `data/digits.csv.gz` ([`digits_embedded`])
//!   and the CSV parser behind it.
//! - [`idx`]: IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
//!
//! Every batch of a step is a pure function of (seed, step): sources keep no cursor, so the
//! batches of step `s` do not depend on which steps were asked before (resume replays exactly).
//! The random streams come from rand's `StdRng` seeded per (seed, stream, index) in the private `rng` module; the draws are
//! reproducible for a given `rand` version (pinned in Cargo.lock).
//!
//! The datasets under `data/` and their provenance: `data/README.md`.
use crate::Batch;
use std::io::Read;
use std::path::Path;

pub mod digits;
pub mod idx;
pub mod images;
pub(crate) mod rng;
pub mod text;

pub use digits::{digits_embedded, digits_from_file, parse_digits_csv};
pub use idx::{IdxImages, IdxPair, fashion_mnist, mnist, read_idx_images, read_idx_labels};
pub use images::{ImageSource, Images};
pub use text::{TextData, TextSource, TextSourceConfig, VOCAB};

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

impl DataError {
    /// A [`DataError::Format`] for `path`.
    pub fn format(path: impl Into<String>, detail: impl Into<String>) -> DataError {
        DataError::Format {
            path: path.into(),
            detail: detail.into(),
        }
    }
    /// A [`DataError::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    /// The path the error names, if it names one (`Invalid` does not).
    pub fn path(&self) -> Option<&str> {
        match self {
            DataError::Format { path, .. } | DataError::Io { path, .. } => Some(path),
            DataError::Invalid(_) => None,
        }
    }
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

/// The two bytes every gzip member starts with (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest decompressed size [`gunzip_if_gzip`] accepts (4 GiB): a corrupt or hostile file fails
/// with an error instead of filling memory. Fashion-MNIST's largest file is 47 MB.
pub const MAX_DECOMPRESSED: u64 = 4 << 30;

/// `bytes` unchanged, or decompressed when they start with the gzip magic (all members of a
/// multi-member file). `path` names the file in errors.
pub fn gunzip_if_gzip(bytes: Vec<u8>, path: &str) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    let dec = flate2::read::MultiGzDecoder::new(bytes.as_slice());
    // One byte over the limit tells "exactly at the limit" from "over it".
    dec.take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("gzip: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(DataError::format(
            path,
            format!("gzip: decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}

/// Reads a whole file, decompressing it when it starts with the gzip magic (whatever its name).
/// A folder, a FIFO or a device is refused before reading (a FIFO would wait for a writer, a
/// device such as `/dev/zero` would never end).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    if let Ok(m) = std::fs::metadata(path)
        && !m.is_file()
    {
        let what = if m.is_dir() {
            "is a folder, not a file"
        } else {
            "is not a regular file (a FIFO or a device)"
        };
        return Err(DataError::io(path, std::io::Error::other(what)));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    gunzip_if_gzip(bytes, &path.display().to_string())
}

//! Byte text: every byte is a token (vocabulary [`VOCAB`] = 256), so any file is a corpus and no
//! tokenizer is needed. [`TextData`] holds the bytes; [`TextSource`] serves next-byte batches.
//!
//! Split: the last `val_fraction` of the text is the validation part, the rest the training part;
//! the two never overlap (a window never crosses the split point).
//!
//! Batches (`b` rows, `t` tokens each), for the byte string `x` of one part:
//! ```text
//! tokens[r, j]  = x[s_r + j]          r in 0..b, j in 0..t
//! targets[r, j] = x[s_r + j + 1]      (tokens shifted by one)
//! ```
//! Training: the starts `s_r` are uniform in `0..=len(train) - (t + 1)`, drawn from a generator
//! seeded by (seed, step) alone. Validation: `val_batches * b` starts evenly spaced from the first
//! to the last window of the validation part, the same every call.
use super::rng::{self, streams};
use super::{DataError, DataSource, read_maybe_gz};
use crate::Batch;
use rand::Rng;
use std::borrow::Cow;
use std::path::Path;

/// Number of distinct tokens: one per byte value.
pub const VOCAB: usize = 256;

/// The embedded King James text (Genesis to Ruth, 1,087,553 ASCII bytes; see `data/README.md`).
static KJV: &[u8] = include_bytes!("../../../../data/kjv.txt");

/// A text as bytes, with a name for logs. Never empty.
#[derive(Clone, Debug)]
pub struct TextData {
    name: String,
    bytes: Cow<'static, [u8]>,
}

impl TextData {
    /// The King James Bible, Genesis 1:1 to Ruth 4:22, one verse per line (`Ge1:1 In the
    /// beginning ...`), embedded in the binary from `data/kjv.txt`: 1,087,553 bytes of ASCII.
    pub fn embedded_kjv() -> TextData {
        TextData {
            name: "kjv (Genesis-Ruth, embedded)".to_string(),
            bytes: Cow::Borrowed(KJV),
        }
    }

    /// Reads a text file (any bytes; a gzip-compressed file is decompressed, recognised by the
    /// gzip magic). An empty file is an error.
    pub fn from_file(path: impl AsRef<Path>) -> Result<TextData, DataError> {
        let path = path.as_ref();
        let bytes = read_maybe_gz(path)?;
        if bytes.is_empty() {
            return Err(DataError::format(
                path.display().to_string(),
                "empty file: a text needs at least one byte",
            ));
        }
        Ok(TextData {
            name: path.display().to_string(),
            bytes: Cow::Owned(bytes),
        })
    }

    /// A text from bytes in memory; `name` is what logs call it. Empty bytes are an error.
    pub fn from_bytes(
        bytes: impl Into<Vec<u8>>,
        name: impl Into<String>,
    ) -> Result<TextData, DataError> {
        let bytes = bytes.into();
        let name = name.into();
        if bytes.is_empty() {
            return Err(DataError::Invalid(format!(
                "text {name}: empty, a text needs at least one byte"
            )));
        }
        Ok(TextData {
            name,
            bytes: Cow::Owned(bytes),
        })
    }

    /// What logs call this text (the path for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole text.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length in bytes (= tokens).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: constructors refuse empty texts (here for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Where the validation part starts: the last `round(len * val_fraction)` bytes are
    /// validation. `val_fraction` must lie in (0, 1) and leave both parts non-empty.
    pub fn split_point(&self, val_fraction: f64) -> Result<usize, DataError> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::Invalid(format!(
                "text {}: validation fraction {val_fraction} is outside (0, 1)",
                self.name
            )));
        }
        let n = self.len();
        let val = (n as f64 * val_fraction).round() as usize;
        if val == 0 || val >= n {
            return Err(DataError::Invalid(format!(
                "text {}: validation fraction {val_fraction} of {n} bytes leaves {val} validation and {} training bytes; both must be non-empty",
                self.name,
                n.saturating_sub(val)
            )));
        }
        Ok(n - val)
    }

    /// (training part, validation part) for `val_fraction`: contiguous, in order, no overlap.
    pub fn split(&self, val_fraction: f64) -> Result<(&[u8], &[u8]), DataError> {
        let p = self.split_point(val_fraction)?;
        Ok(self.bytes.split_at(p))
    }
}

/// Tokens back to text: bytes, decoded as UTF-8 with U+FFFD for invalid sequences and for tokens
/// outside 0..256.
pub fn decode(tokens: &[u32]) -> String {
    let mut out = String::with_capacity(tokens.len());
    let mut run: Vec<u8> = Vec::with_capacity(tokens.len());
    for &tok in tokens {
        match u8::try_from(tok) {
            Ok(b) => run.push(b),
            Err(_) => {
                out.push_str(&String::from_utf8_lossy(&run));
                run.clear();
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
    }
    out.push_str(&String::from_utf8_lossy(&run));
    out
}

/// Settings of a [`TextSource`]; `Default` gives the defaults named on each field (also when a
/// field is missing from a serialized config).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextSourceConfig {
    /// Rows per batch, `b` (default 8).
    pub batch: usize,
    /// Tokens per row, `t` (the model's context; default 128).
    pub context: usize,
    /// Seed of the training windows (default 0).
    pub seed: u64,
    /// Fraction of the text, at its end, held out for validation, in (0, 1) (default 0.1).
    pub val_fraction: f64,
    /// Number of validation batches of `b` rows, at least 1 (default 8).
    pub val_batches: usize,
}

impl Default for TextSourceConfig {
    fn default() -> Self {
        TextSourceConfig {
            batch: 8,
            context: 128,
            seed: 0,
            val_fraction: 0.1,
            val_batches: 8,
        }
    }
}

/// Next-byte batches from a [`TextData`]: `Batch::Tokens` with `b` rows of `t` tokens.
#[derive(Clone, Debug)]
pub struct TextSource {
    data: TextData,
    cfg: TextSourceConfig,
    /// Start of the validation part.
    split: usize,
}

impl TextSource {
    /// Checks the settings against the text: both parts must hold at least one window of `t + 1`
    /// bytes; `b`, `t` and the number of validation batches must be at least 1.
    pub fn new(data: TextData, cfg: TextSourceConfig) -> Result<TextSource, DataError> {
        let name = data.name().to_string();
        let bad = |detail: String| Err(DataError::Invalid(format!("text {name}: {detail}")));
        if cfg.batch == 0 || cfg.context == 0 || cfg.val_batches == 0 {
            return bad(format!(
                "batch {}, context {} and validation batches {} must all be at least 1",
                cfg.batch, cfg.context, cfg.val_batches
            ));
        }
        if cfg.batch.checked_mul(cfg.context).is_none()
            || cfg
                .batch
                .checked_mul(cfg.val_batches)
                .and_then(|n| n.checked_mul(cfg.context))
                .is_none()
        {
            return bad(format!(
                "batch {} x context {} x validation batches {} overflows",
                cfg.batch, cfg.context, cfg.val_batches
            ));
        }
        let window = cfg.context + 1;
        if data.len() < window {
            return bad(format!(
                "{} bytes is shorter than one window of context + 1 = {window} bytes",
                data.len()
            ));
        }
        let split = data.split_point(cfg.val_fraction)?;
        let (train, val) = (split, data.len() - split);
        if train < window || val < window {
            return bad(format!(
                "the split at {} (validation fraction {}) leaves {train} training and {val} validation bytes; each part needs one window of context + 1 = {window} bytes",
                split, cfg.val_fraction
            ));
        }
        Ok(TextSource { data, cfg, split })
    }

    /// The text.
    pub fn data(&self) -> &TextData {
        &self.data
    }

    /// The settings.
    pub fn config(&self) -> &TextSourceConfig {
        &self.cfg
    }

    /// The training part (the text before the split point).
    pub fn train_part(&self) -> &[u8] {
        &self.data.bytes()[..self.split]
    }

    /// The validation part (the last `val_fraction` of the text).
    pub fn val_part(&self) -> &[u8] {
        &self.data.bytes()[self.split..]
    }

    /// The training window starts of `step` (offsets into [`Self::train_part`]), `b` of them.
    pub fn train_starts(&self, step: u64) -> Vec<usize> {
        // starts in 0..=len - (t + 1): len - t choices (>= 1, checked in `new`)
        let choices = self.split - self.cfg.context;
        let mut rng = rng::stream(self.cfg.seed, streams::TEXT_TRAIN, step);
        (0..self.cfg.batch)
            .map(|_| rng.random_range(0..choices))
            .collect()
    }

    /// The validation window starts (offsets into [`Self::val_part`]): `val_batches * b` starts
    /// evenly spaced from 0 to `len(val) - (t + 1)`, rounded down.
    pub fn val_starts(&self) -> Vec<usize> {
        let n = self.cfg.val_batches * self.cfg.batch;
        let last = self.val_part().len() - (self.cfg.context + 1);
        if n == 1 {
            return vec![0];
        }
        (0..n)
            .map(|i| (i as u128 * last as u128 / (n - 1) as u128) as usize)
            .collect()
    }

    /// One `Batch::Tokens` from windows of `part` starting at `starts`.
    fn batch_at(&self, part: &[u8], starts: &[usize]) -> Batch {
        let t = self.cfg.context;
        let b = starts.len();
        // tokens, targets: (b, t) row-major
        let mut tokens = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for &s in starts {
            let w = &part[s..s + t + 1];
            tokens.extend(w[..t].iter().map(|&x| u32::from(x)));
            targets.extend(w[1..].iter().map(|&x| u32::from(x)));
        }
        Batch::Tokens {
            tokens,
            targets,
            b,
            t,
        }
    }
}

impl DataSource for TextSource {
    fn train_batch(&self, step: u64) -> Result<Batch, DataError> {
        let starts = self.train_starts(step);
        Ok(self.batch_at(self.train_part(), &starts))
    }

    fn val_batches(&self) -> Result<Vec<Batch>, DataError> {
        let starts = self.val_starts();
        Ok(starts
            .chunks(self.cfg.batch)
            .map(|c| self.batch_at(self.val_part(), c))
            .collect())
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "text {}: {} bytes, train {} / validation {} (last {}), batches of {} x {} byte tokens, seed {}, {} validation batches",
            self.data.name(),
            self.data.len(),
            self.split,
            self.data.len() - self.split,
            c.val_fraction,
            c.batch,
            c.context,
            c.seed,
            c.val_batches
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &[u8], b: usize, t: usize, f: f64, vb: usize) -> Result<TextSource, DataError> {
        let data = TextData::from_bytes(text.to_vec(), "test")?;
        TextSource::new(
            data,
            TextSourceConfig {
                batch: b,
                context: t,
                seed: 5,
                val_fraction: f,
                val_batches: vb,
            },
        )
    }

    #[test]
    fn windows_stay_inside_their_part() {
        // 100 bytes, validation = last 20: windows of 6 start at 0..=74 (train), 0..=14 (val)
        let text: Vec<u8> = (0..100u8).collect();
        let s = src(&text, 7, 5, 0.2, 3).unwrap();
        assert_eq!(s.train_part().len(), 80);
        for step in 0..200 {
            assert!(s.train_starts(step).iter().all(|&x| x + 6 <= 80));
        }
        let v = s.val_starts();
        assert_eq!(v.len(), 21);
        assert_eq!((v[0], v[20]), (0, 14));
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn smallest_text_that_fits() {
        // t + 1 = 3 bytes per part exactly: one start each
        let s = src(b"abcdef", 2, 2, 0.5, 1).unwrap();
        assert_eq!(s.train_starts(9), vec![0, 0]);
        assert_eq!(s.val_starts(), vec![0, 0]);
        assert!(src(b"abcde", 2, 2, 0.5, 1).is_err());
    }

    #[test]
    fn decode_round_trips_bytes() {
        let tokens: Vec<u32> = "héllo".bytes().map(u32::from).collect();
        assert_eq!(decode(&tokens), "héllo");
        assert_eq!(decode(&[104, 300, 105]), "h\u{FFFD}i");
    }
}

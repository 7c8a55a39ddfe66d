//! Labelled feature rows (images flattened to vectors) and the source that serves them.
//!
//! [`Images`]: `features` is (rows, dim) row-major in [0, 1], one label in `0..classes` per row.
//! [`Images::split`] is stratified: each class keeps its share in both parts.
//! [`ImageSource`]: training batches walk a fresh permutation of the training rows each epoch;
//! the permutation of epoch `e` comes from (seed, e) alone, so the rows of step `s` are
//!
//! ```text
//! row(s, i) = perm_{e}[p mod n]   with p = s * batch + i, e = p / n, n = training rows
//! ```
//!
//! and do not depend on earlier calls (a small cache of the last permutation only saves work).
use super::rng::{self, streams};
use super::{DataError, DataSource};
use crate::Batch;
use rand::seq::SliceRandom;
use std::sync::{Arc, Mutex};

/// Labelled feature rows: `features` is (rows, dim) row-major, `labels[r] < classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// What logs call the set (`digits`, a path, `... (train)`).
    pub name: String,
    /// Number of rows (examples).
    pub rows: usize,
    /// Features per row (64 for the 8x8 digits, 784 for MNIST).
    pub dim: usize,
    /// (rows, dim) row-major, scaled to [0, 1].
    pub features: Vec<f32>,
    /// One class per row.
    pub labels: Vec<u8>,
    /// Number of classes; every label is below it.
    pub classes: usize,
}

impl Images {
    /// Checked constructor: `features.len() == labels.len() * dim`, every label below `classes`,
    /// `dim >= 1`, `1 <= classes <= 256`.
    pub fn new(
        name: impl Into<String>,
        dim: usize,
        features: Vec<f32>,
        labels: Vec<u8>,
        classes: usize,
    ) -> Result<Images, DataError> {
        let im = Images {
            name: name.into(),
            rows: labels.len(),
            dim,
            features,
            labels,
            classes,
        };
        im.validate()?;
        Ok(im)
    }

    /// Checks the invariants (the fields are public, so a source re-checks what it is given).
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |detail: String| {
            Err(DataError::Invalid(format!(
                "images {}: {detail}",
                self.name
            )))
        };
        if self.dim == 0 || self.classes == 0 || self.classes > 256 {
            return bad(format!(
                "dim {} must be at least 1 and classes {} in 1..=256",
                self.dim, self.classes
            ));
        }
        if self.labels.len() != self.rows {
            return bad(format!(
                "{} labels for {} rows",
                self.labels.len(),
                self.rows
            ));
        }
        if self.rows.checked_mul(self.dim) != Some(self.features.len()) {
            return bad(format!(
                "{} feature values for {} rows of {}",
                self.features.len(),
                self.rows,
                self.dim
            ));
        }
        if let Some((r, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= self.classes)
        {
            return bad(format!("row {r}: label {l} is not below {}", self.classes));
        }
        Ok(())
    }

    /// Row `r`'s features (`dim` values).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.features[r * self.dim..(r + 1) * self.dim]
    }

    /// How many rows each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The rows `idx`, in that order, named `name`.
    pub fn select(&self, idx: &[usize], name: impl Into<String>) -> Images {
        let mut features = Vec::with_capacity(idx.len() * self.dim);
        for &r in idx {
            features.extend_from_slice(self.row(r));
        }
        Images {
            name: name.into(),
            rows: idx.len(),
            dim: self.dim,
            features,
            labels: idx.iter().map(|&r| self.labels[r]).collect(),
            classes: self.classes,
        }
    }

    /// Stratified, deterministic split into (train, validation): within each class the rows are
    /// shuffled with a generator seeded by (seed, class) and the first `round(count *
    /// val_fraction)` go to validation. Both parts keep the original row order.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Images, Images), DataError> {
        self.validate()?;
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::Invalid(format!(
                "images {}: validation fraction {val_fraction} is outside (0, 1)",
                self.name
            )));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
        for (r, &l) in self.labels.iter().enumerate() {
            by_class[usize::from(l)].push(r);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (c, mut rows) in by_class.into_iter().enumerate() {
            rows.shuffle(&mut rng::stream(seed, streams::IMAGE_SPLIT, c as u64));
            let k = (rows.len() as f64 * val_fraction).round() as usize;
            val.extend_from_slice(&rows[..k]);
            train.extend_from_slice(&rows[k..]);
        }
        if train.is_empty() || val.is_empty() {
            return Err(DataError::Invalid(format!(
                "images {}: validation fraction {val_fraction} of {} rows leaves {} training and {} validation rows; both must be non-empty",
                self.name,
                self.rows,
                train.len(),
                val.len()
            )));
        }
        train.sort_unstable();
        val.sort_unstable();
        Ok((
            self.select(&train, format!("{} (train)", self.name)),
            self.select(&val, format!("{} (validation)", self.name)),
        ))
    }
}

/// Feature batches from a training and a validation [`Images`]: `Batch::Features`.
#[derive(Debug)]
pub struct ImageSource {
    train: Images,
    val: Images,
    batch: usize,
    seed: u64,
    /// The last epoch's permutation: saves recomputing it every step; never changes a result.
    cache: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl ImageSource {
    /// Checks both sets and that they agree (dim, classes); `batch` rows per training batch, in
    /// `1..=train.rows`; validation batches are the validation rows in order, `batch` at a time
    /// (the last one may be shorter).
    pub fn new(
        train: Images,
        val: Images,
        batch: usize,
        seed: u64,
    ) -> Result<ImageSource, DataError> {
        train.validate()?;
        val.validate()?;
        if train.dim != val.dim || train.classes != val.classes {
            return Err(DataError::Invalid(format!(
                "images: train {} has dim {} and {} classes, validation {} has dim {} and {} classes",
                train.name, train.dim, train.classes, val.name, val.dim, val.classes
            )));
        }
        if train.rows > u32::MAX as usize {
            return Err(DataError::Invalid(format!(
                "images {}: {} rows, more than this source indexes (2^32 - 1)",
                train.name, train.rows
            )));
        }
        for (what, set) in [("training", &train), ("validation", &val)] {
            if set.rows == 0 {
                return Err(DataError::Invalid(format!(
                    "images {}: the {what} set has no rows",
                    set.name
                )));
            }
        }
        if batch == 0 || batch > train.rows || val.rows == 0 {
            return Err(DataError::Invalid(format!(
                "images {}: batch {batch} must be in 1..={} (training rows), and validation {} needs rows (has {})",
                train.name, train.rows, val.name, val.rows
            )));
        }
        Ok(ImageSource {
            train,
            val,
            batch,
            seed,
            cache: Mutex::new(None),
        })
    }

    /// Splits `images` with [`Images::split`]`(val_fraction, seed)` and serves the two parts,
    /// `batch` rows at a time, shuffled with the same `seed` (the split and the epochs draw from
    /// separate streams).
    pub fn split_from(
        images: &Images,
        val_fraction: f64,
        batch: usize,
        seed: u64,
    ) -> Result<ImageSource, DataError> {
        let (train, val) = images.split(val_fraction, seed)?;
        ImageSource::new(train, val, batch, seed)
    }

    /// The training rows.
    pub fn train(&self) -> &Images {
        &self.train
    }

    /// The validation rows.
    pub fn val(&self) -> &Images {
        &self.val
    }

    /// Rows per training batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The permutation of the training rows for `epoch`.
    fn epoch_perm(&self, epoch: u64) -> Arc<Vec<u32>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((e, p)) = cache.as_ref()
            && *e == epoch
        {
            return Arc::clone(p);
        }
        let mut perm: Vec<u32> = (0..self.train.rows as u32).collect();
        perm.shuffle(&mut rng::stream(self.seed, streams::IMAGE_EPOCH, epoch));
        let perm = Arc::new(perm);
        *cache = Some((epoch, Arc::clone(&perm)));
        perm
    }

    /// The training rows of `step` (indices into [`Self::train`]), `batch` of them.
    pub fn train_rows(&self, step: u64) -> Vec<usize> {
        let n = self.train.rows as u128;
        let first = u128::from(step) * self.batch as u128;
        let mut rows = Vec::with_capacity(self.batch);
        let mut current: Option<(u64, Arc<Vec<u32>>)> = None;
        for i in 0..self.batch as u128 {
            let p = first + i;
            // epoch < 2^64 because step < 2^64 and batch <= n
            let epoch = (p / n) as u64;
            if current.as_ref().is_none_or(|(e, _)| *e != epoch) {
                current = Some((epoch, self.epoch_perm(epoch)));
            }
            let perm = &current.as_ref().expect("set just above").1;
            rows.push(perm[(p % n) as usize] as usize);
        }
        rows
    }

    fn features_batch(set: &Images, rows: impl Iterator<Item = usize>) -> Batch {
        // x: (rows, dim) row-major
        let mut x = Vec::new();
        let mut targets = Vec::new();
        for r in rows {
            x.extend_from_slice(set.row(r));
            targets.push(u32::from(set.labels[r]));
        }
        Batch::Features {
            x,
            dim: set.dim,
            targets,
        }
    }
}

impl DataSource for ImageSource {
    fn train_batch(&self, step: u64) -> Result<Batch, DataError> {
        let rows = self.train_rows(step);
        Ok(Self::features_batch(&self.train, rows.into_iter()))
    }

    fn val_batches(&self) -> Result<Vec<Batch>, DataError> {
        Ok((0..self.val.rows)
            .step_by(self.batch)
            .map(|s| Self::features_batch(&self.val, s..(s + self.batch).min(self.val.rows)))
            .collect())
    }

    fn describe(&self) -> String {
        format!(
            "images {}: train {} / validation {} rows of {} features, {} classes, batches of {}, reshuffled each epoch with seed {}",
            self.train.name,
            self.train.rows,
            self.val.rows,
            self.train.dim,
            self.train.classes,
            self.batch,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(rows: usize, classes: usize) -> Images {
        let labels: Vec<u8> = (0..rows).map(|r| (r % classes) as u8).collect();
        let features = (0..rows * 3)
            .map(|v| v as f32 / (rows * 3) as f32)
            .collect();
        Images::new("toy", 3, features, labels, classes).unwrap()
    }

    #[test]
    fn every_epoch_visits_each_row_once() {
        // 10 rows, batch 4: steps 0..5 cover exactly epochs 0 and 1 (20 positions)
        let s = ImageSource::new(toy(10, 2), toy(3, 2), 4, 9).unwrap();
        let all: Vec<usize> = (0..5).flat_map(|st| s.train_rows(st)).collect();
        for epoch in all.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort_unstable();
            assert_eq!(e, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(all[..10], all[10..], "epochs are reshuffled");
    }

    #[test]
    fn an_empty_set_is_named_not_a_batch_range() {
        let e = ImageSource::new(toy(0, 2), toy(3, 2), 8, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("the training set has no rows"), "{e}");
        let e = ImageSource::new(toy(5, 2), toy(0, 2), 4, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("the validation set has no rows"), "{e}");
        let e = ImageSource::new(toy(5, 2), toy(3, 2), 8, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("batch 8 must be in 1..=5"), "{e}");
    }

    #[test]
    fn huge_steps_do_not_overflow() {
        let s = ImageSource::new(toy(7, 2), toy(3, 2), 7, 1).unwrap();
        let rows = s.train_rows(u64::MAX);
        assert_eq!(rows.len(), 7);
        assert!(rows.iter().all(|&r| r < 7));
    }

    #[test]
    fn bad_images_are_refused() {
        assert!(Images::new("x", 3, vec![0.0; 5], vec![0, 1], 2).is_err());
        assert!(Images::new("x", 1, vec![0.0; 2], vec![0, 2], 2).is_err());
        assert!(Images::new("x", 0, vec![], vec![], 2).is_err());
        assert!(ImageSource::new(toy(4, 2), toy(2, 2), 5, 0).is_err());
        assert!(ImageSource::new(toy(4, 2), toy(2, 3), 2, 0).is_err());
    }
}

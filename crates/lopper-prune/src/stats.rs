//! Sparsity accounting: per-tensor and global density, the fraction of weight magnitude kept, and
//! the multiply-add work saved.
//!
//! FLOPs are those of one matrix-vector product with the weight's matrix view per token:
//! `2 * elements` dense, `2 * kept` sparse (a training step runs three such products, forward,
//! input gradient and weight gradient, each scaled the same way).
use crate::param::Mask;
use crate::{Error, Result};
use serde::Serialize;

/// Accounting of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorStats {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub numel: usize,
    /// Elements kept (mask true, or non-zero when measured from values).
    pub kept: usize,
    /// `kept / numel` (0 for an empty tensor).
    pub density: f64,
    /// `sum |w| over kept / sum |w| over all` of the values before pruning, finite values only
    /// (1 when all are zero).
    pub kept_magnitude: f64,
    /// `2 * numel`: dense FLOPs per token.
    pub flops_dense: u64,
    /// `2 * kept`: sparse FLOPs per token.
    pub flops_sparse: u64,
}

/// Totals over a set of tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Number of tensors.
    pub tensors: usize,
    /// Elements.
    pub numel: usize,
    /// Kept elements.
    pub kept: usize,
    /// `kept / numel`.
    pub density: f64,
    /// Kept fraction of the total magnitude.
    pub kept_magnitude: f64,
    /// Dense FLOPs per token.
    pub flops_dense: u64,
    /// Sparse FLOPs per token.
    pub flops_sparse: u64,
    /// `1 - flops_sparse / flops_dense` (0 when there is nothing).
    pub flops_saved: f64,
}

/// Per-tensor accounting and totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SparsityReport {
    /// One entry per tensor, in order.
    pub tensors: Vec<TensorStats>,
    /// Totals over them.
    pub totals: Totals,
}

fn ratio(a: f64, b: f64, empty: f64) -> f64 {
    if b == 0.0 { empty } else { a / b }
}

impl TensorStats {
    /// Accounting of a tensor pruned with `mask`, from its values *before* pruning.
    pub fn from_mask(name: &str, shape: &[usize], values: &[f32], mask: &[bool]) -> Result<Self> {
        if values.len() != mask.len() {
            return Err(Error::mismatch(
                "TensorStats::from_mask",
                format!(
                    "{name:?}: {} values, {} mask entries",
                    values.len(),
                    mask.len()
                ),
            ));
        }
        let kept = mask.iter().filter(|&&k| k).count();
        let (mut all, mut kmag) = (0.0f64, 0.0f64);
        for (&v, &k) in values.iter().zip(mask).filter(|(v, _)| v.is_finite()) {
            let a = f64::from(v.abs());
            all += a;
            if k {
                kmag += a;
            }
        }
        Ok(Self::build(
            name,
            shape,
            values.len(),
            kept,
            ratio(kmag, all, 1.0),
        ))
    }
    /// Accounting of a tensor as it is: kept = non-zeros (kept magnitude is 1).
    pub fn from_values(name: &str, shape: &[usize], values: &[f32]) -> Self {
        let kept = values.iter().filter(|&&v| v != 0.0).count();
        Self::build(name, shape, values.len(), kept, 1.0)
    }
    fn build(name: &str, shape: &[usize], numel: usize, kept: usize, kept_magnitude: f64) -> Self {
        TensorStats {
            name: name.to_string(),
            shape: shape.to_vec(),
            numel,
            kept,
            density: ratio(kept as f64, numel as f64, 0.0),
            kept_magnitude,
            flops_dense: 2 * numel as u64,
            flops_sparse: 2 * kept as u64,
        }
    }
}

impl SparsityReport {
    /// Totals over the given tensors. The kept magnitude is weighted by each tensor's magnitude
    /// when `magnitudes` (sum |w| per tensor) is given, by element count otherwise.
    pub fn new(tensors: Vec<TensorStats>, magnitudes: Option<&[f64]>) -> Self {
        let numel: usize = tensors.iter().map(|t| t.numel).sum();
        let kept: usize = tensors.iter().map(|t| t.kept).sum();
        let fd: u64 = tensors.iter().map(|t| t.flops_dense).sum();
        let fs: u64 = tensors.iter().map(|t| t.flops_sparse).sum();
        let kept_magnitude = match magnitudes {
            Some(m) => {
                let all: f64 = m.iter().sum();
                let k: f64 = tensors
                    .iter()
                    .zip(m)
                    .map(|(t, m)| t.kept_magnitude * m)
                    .sum();
                ratio(k, all, 1.0)
            }
            None => {
                let k: f64 = tensors
                    .iter()
                    .map(|t| t.kept_magnitude * t.numel as f64)
                    .sum();
                ratio(k, numel as f64, 1.0)
            }
        };
        let totals = Totals {
            tensors: tensors.len(),
            numel,
            kept,
            density: ratio(kept as f64, numel as f64, 0.0),
            kept_magnitude,
            flops_dense: fd,
            flops_sparse: fs,
            flops_saved: if fd == 0 {
                0.0
            } else {
                1.0 - fs as f64 / fd as f64
            },
        };
        SparsityReport { tensors, totals }
    }
}

/// Sum of `|w|` over the finite values (f64), for weighting kept-magnitude totals.
pub fn magnitude(values: &[f32]) -> f64 {
    values
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| f64::from(v.abs()))
        .sum()
}

/// Density of a mask (`kept / len`, 0 when empty).
pub fn mask_density(mask: &Mask) -> f64 {
    ratio(
        mask.iter().filter(|&&k| k).count() as f64,
        mask.len() as f64,
        0.0,
    )
}

//! The plain-data view of a trainable tensor that every pruner takes, and masks.
use crate::{Error, Result};
use lopper_sparse::{Csr, Sparse24};
use lopper_tensor::MatRef;

/// A trainable tensor as a trainer hands it over: name, shape, values (mutable: pruning zeroes them,
/// rewinding and dynamic sparse training rewrite them) and, when available, the current gradient.
#[derive(Debug)]
pub struct Param<'a> {
    /// Tensor name (as in the checkpoint), used by scopes and to key per-tensor state.
    pub name: &'a str,
    /// Shape, row-major; the last axis is the one N:M groups run along.
    pub shape: &'a [usize],
    /// The values, `shape.iter().product()` of them.
    pub values: &'a mut [f32],
    /// dL/dvalues of the current step (dense), when the trainer has it.
    pub grad: Option<&'a [f32]>,
}

/// A read-only [`Param`]: what criteria and scopes look at.
#[derive(Clone, Copy, Debug)]
pub struct ParamRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape, row-major.
    pub shape: &'a [usize],
    /// The values.
    pub values: &'a [f32],
    /// The current gradient, if any.
    pub grad: Option<&'a [f32]>,
}

impl<'a> Param<'a> {
    /// A param without gradient.
    pub fn new(name: &'a str, shape: &'a [usize], values: &'a mut [f32]) -> Self {
        Param {
            name,
            shape,
            values,
            grad: None,
        }
    }
    /// The same param with a gradient attached.
    pub fn with_grad(mut self, grad: &'a [f32]) -> Self {
        self.grad = Some(grad);
        self
    }
    /// A read-only view.
    pub fn as_ref(&self) -> ParamRef<'_> {
        ParamRef {
            name: self.name,
            shape: self.shape,
            values: self.values,
            grad: self.grad,
        }
    }
}

impl<'a> ParamRef<'a> {
    /// A read-only param without gradient.
    pub fn new(name: &'a str, shape: &'a [usize], values: &'a [f32]) -> Self {
        ParamRef {
            name,
            shape,
            values,
            grad: None,
        }
    }
    /// The same param with a gradient attached.
    pub fn with_grad(mut self, grad: &'a [f32]) -> Self {
        self.grad = Some(grad);
        self
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.values.len()
    }
    /// Checks that values (and grad) hold `shape.iter().product()` elements.
    pub fn validate(&self) -> Result<()> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::pattern(self.name, self.shape, "shape overflows usize"))?;
        if n != self.values.len() {
            return Err(Error::pattern(
                self.name,
                self.shape,
                format!("{} values for {n} elements", self.values.len()),
            ));
        }
        if let Some(g) = self.grad
            && g.len() != n
        {
            return Err(Error::pattern(
                self.name,
                self.shape,
                format!("gradient has {} elements, expected {n}", g.len()),
            ));
        }
        Ok(())
    }
    /// The gradient, or an error naming the criterion that needs it.
    pub fn require_grad(&self, who: &'static str) -> Result<&'a [f32]> {
        self.grad
            .ok_or_else(|| Error::mismatch(who, format!("tensor {:?} has no gradient", self.name)))
    }
}

/// A keep-mask: `true` = kept, row-major, one entry per element.
pub type Mask = Vec<bool>;

/// `(rows, cols)` of the matrix view of a shape: the last axis is the columns, all others the rows
/// (a 1-D tensor is one row; a 0-D tensor one element). Rows that overflow `usize` saturate at
/// `usize::MAX`, a count that no buffer holds, so that the length checks after it fail.
pub fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        Some((&c, rest)) => (rest.iter().fold(1usize, |a, &d| a.saturating_mul(d)), c),
    }
}

/// Zeroes the values whose mask entry is `false`.
pub fn apply_mask(values: &mut [f32], mask: &[bool]) -> Result<()> {
    if values.len() != mask.len() {
        return Err(Error::mismatch(
            "apply_mask",
            format!("{} values, {} mask entries", values.len(), mask.len()),
        ));
    }
    for (v, &k) in values.iter_mut().zip(mask) {
        if !k {
            *v = 0.0;
        }
    }
    Ok(())
}

/// Hands a pruned weight on as CSR (the matrix view of [`matrix_dims`]), keeping exactly the masked
/// entries (explicit zeros included), so that compute scales with the kept count.
pub fn to_csr(p: ParamRef<'_>, mask: &[bool]) -> Result<Csr> {
    p.validate()?;
    let (r, c) = matrix_dims(p.shape);
    Ok(Csr::from_mask(MatRef::new(p.values, r, c)?, mask)?)
}

/// Hands a 2:4-pruned weight on as [`Sparse24`] (matrix view of [`matrix_dims`]); errors when the
/// values are not 2:4 along the last axis.
pub fn to_sparse24(p: ParamRef<'_>) -> Result<Sparse24> {
    p.validate()?;
    let (r, c) = matrix_dims(p.shape);
    Ok(Sparse24::from_dense_exact(MatRef::new(p.values, r, c)?)?)
}

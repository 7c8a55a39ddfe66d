//! Granularities: what is kept or removed together. A [`Granularity`] turns one score per element
//! into a keep-mask at a target sparsity.
//!
//! Counting and ties, for every granularity: the number of units kept is
//! `k = round_half_even((1 - s) * units)` (Python's and numpy's `round`), and units are ranked by
//! score, larger first, **ties to the lower index** (flat row-major index for elements, group index
//! for groups), NaN scores as the largest. Structured units (rows, columns, blocks, heads,
//! channels) score the sum of their elements' scores.
use crate::param::{Mask, matrix_dims};
use crate::{Error, Result, check_sparsity};

/// Turns scores into a keep-mask.
pub trait Granularity {
    /// Human-readable name (`unstructured`, `2:4`, `rows`, ...).
    fn name(&self) -> String;
    /// The density the pattern imposes whatever the target (N:M: `N/M`); `None` when free.
    fn fixed_density(&self) -> Option<f64> {
        None
    }
    /// Whether units are single elements ranked across the tensor: only such a granularity can be
    /// ranked globally across tensors.
    fn is_elementwise(&self) -> bool {
        false
    }
    /// Checks that the pattern fits a tensor of this shape.
    fn check(&self, name: &str, shape: &[usize]) -> Result<()>;
    /// The keep-mask of a tensor at `sparsity` (ignored when [`Granularity::fixed_density`] is set;
    /// otherwise outside `[0, 1)` or NaN it is an error, see [`crate::check_sparsity`]).
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], sparsity: f64) -> Result<Mask>;
}

/// Units kept out of `n` at sparsity `s`: `round_half_even((1 - s) * n)`.
pub fn kept_count(n: usize, sparsity: f64) -> usize {
    (((1.0 - sparsity) * n as f64).round_ties_even() as usize).min(n)
}

/// Indices of the `k` largest keys (ties to the lower index, NaN largest), ascending
/// (`lopper_tensor::ops::topk_indices`).
pub fn topk_indices(keys: &[f64], k: usize) -> Vec<usize> {
    lopper_tensor::ops::topk_indices(keys, k)
}

/// Keep-mask of the `k` largest scores (ties to the lower index, NaN largest): the mask of
/// [`topk_indices`] on the scores as f64 (`lopper_tensor::ops::topk_mask`).
pub fn topk_mask(scores: &[f32], k: usize) -> Mask {
    lopper_tensor::ops::topk_mask(scores, k)
}

fn check_len(name: &str, shape: &[usize], scores: &[f32]) -> Result<()> {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return Err(Error::pattern(name, shape, "shape overflows usize"));
    };
    if n != scores.len() {
        return Err(Error::pattern(
            name,
            shape,
            format!("{} scores for {n} elements", scores.len()),
        ));
    }
    Ok(())
}

/// Keeps the best `kept_count(groups, s)` groups; `group_of(i)` is element `i`'s group.
fn group_mask(
    scores: &[f32],
    groups: usize,
    group_of: impl Fn(usize) -> usize,
    sparsity: f64,
) -> Mask {
    let mut sums = vec![0.0f64; groups];
    for (i, &s) in scores.iter().enumerate() {
        let s = if s.is_nan() {
            f64::INFINITY
        } else {
            f64::from(s)
        };
        sums[group_of(i)] += s;
    }
    let mut keep = vec![false; groups];
    for g in topk_indices(&sums, kept_count(groups, sparsity)) {
        keep[g] = true;
    }
    (0..scores.len()).map(|i| keep[group_of(i)]).collect()
}

/// Every element on its own; ranked across the whole tensor (or across tensors in global scope).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unstructured;

impl Granularity for Unstructured {
    fn name(&self) -> String {
        "unstructured".into()
    }
    fn is_elementwise(&self) -> bool {
        true
    }
    fn check(&self, _: &str, _: &[usize]) -> Result<()> {
        Ok(())
    }
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], s: f64) -> Result<Mask> {
        check_sparsity(s)?;
        check_len(name, shape, scores)?;
        Ok(topk_mask(scores, kept_count(scores.len(), s)))
    }
}

/// Unstructured within each row of the matrix view: every row keeps `kept_count(cols, s)`
/// elements (Wanda's per-output comparison group).
#[derive(Clone, Copy, Debug, Default)]
pub struct RowBalanced;

impl Granularity for RowBalanced {
    fn name(&self) -> String {
        "row-balanced".into()
    }
    fn check(&self, _: &str, _: &[usize]) -> Result<()> {
        Ok(())
    }
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], s: f64) -> Result<Mask> {
        check_sparsity(s)?;
        check_len(name, shape, scores)?;
        let (_, c) = matrix_dims(shape);
        let mut m = Vec::with_capacity(scores.len());
        for row in scores.chunks(c.max(1)) {
            m.extend(topk_mask(row, kept_count(c, s)));
        }
        Ok(m)
    }
}

/// N:M: in every group of M consecutive elements along the last axis, the N best are kept
/// (ties to the lower index). 2:4 is `NM { n: 2, m: 4 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NM {
    /// Kept per group.
    pub n: usize,
    /// Group length.
    pub m: usize,
}

impl NM {
    /// An N:M pattern; errors unless `1 <= n < m`.
    pub fn new(n: usize, m: usize) -> Result<NM> {
        if n == 0 || n >= m {
            return Err(Error::invalid(
                "pattern",
                format!("N:M needs 1 <= N < M, got {n}:{m}"),
            ));
        }
        Ok(NM { n, m })
    }
}

impl Granularity for NM {
    fn name(&self) -> String {
        format!("{}:{}", self.n, self.m)
    }
    fn fixed_density(&self) -> Option<f64> {
        Some(self.n as f64 / self.m as f64)
    }
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        NM::new(self.n, self.m)?;
        let (_, c) = matrix_dims(shape);
        if shape.is_empty() || !c.is_multiple_of(self.m) {
            return Err(Error::pattern(
                name,
                shape,
                format!(
                    "{}:{} needs the last axis to be a multiple of {}, it is {c}",
                    self.n, self.m, self.m
                ),
            ));
        }
        Ok(())
    }
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], _: f64) -> Result<Mask> {
        check_len(name, shape, scores)?;
        self.check(name, shape)?;
        let mut m = Vec::with_capacity(scores.len());
        for g in scores.chunks(self.m) {
            m.extend(topk_mask(g, self.n));
        }
        Ok(m)
    }
}

/// Whether every group of `m` along the last axis has at most `n` non-zeros (false when the last
/// axis is not a multiple of `m`).
pub fn is_nm(values: &[f32], shape: &[usize], n: usize, m: usize) -> bool {
    let (_, c) = matrix_dims(shape);
    if m == 0 || shape.is_empty() || !c.is_multiple_of(m) {
        return false;
    }
    values
        .chunks(m)
        .all(|g| g.iter().filter(|x| **x != 0.0).count() <= n)
}

/// Whole slices along one axis, optionally several consecutive indices together: rows (axis 0),
/// columns (axis 1), conv channels (axis 0 = output, axis 1 = input channels of
/// `[out, in, kh, kw]`), attention heads (`heads` equal slabs along the axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisSlices {
    /// The axis whose indices are the units.
    pub axis: usize,
    /// Number of units along the axis (`None`: one per index). Heads use `Some(num_heads)`.
    pub units: Option<usize>,
    /// Minimum rank of the tensors it applies to (2 for rows/columns/heads, 3 for conv channels).
    pub min_rank: usize,
    label: &'static str,
}

impl AxisSlices {
    /// Whole rows (slices along axis 0: output units of a Linear `[out, in]`).
    pub fn rows() -> Self {
        AxisSlices {
            axis: 0,
            units: None,
            min_rank: 2,
            label: "rows",
        }
    }
    /// Whole columns (slices along axis 1: input features of a Linear `[out, in]`).
    pub fn columns() -> Self {
        AxisSlices {
            axis: 1,
            units: None,
            min_rank: 2,
            label: "columns",
        }
    }
    /// Conv channels of a `[out, in, kh, kw]` kernel: `axis` 0 = output, 1 = input channels.
    pub fn channels(axis: usize) -> Self {
        AxisSlices {
            axis,
            units: None,
            min_rank: 3,
            label: "channels",
        }
    }
    /// Attention heads: `heads` equal slabs along `axis` (0 for the Q/K/V projections `[H*d, in]`,
    /// 1 for the output projection `[out, H*d]`).
    pub fn heads(heads: usize, axis: usize) -> Self {
        AxisSlices {
            axis,
            units: Some(heads),
            min_rank: 2,
            label: "heads",
        }
    }
}

impl Granularity for AxisSlices {
    fn name(&self) -> String {
        match self.units {
            Some(h) => format!("{}({h}, axis {})", self.label, self.axis),
            None if self.label == "channels" => format!("channels(axis {})", self.axis),
            None => self.label.into(),
        }
    }
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        if shape.len() < self.min_rank || self.axis >= shape.len() {
            return Err(Error::pattern(
                name,
                shape,
                format!(
                    "{} needs a tensor of rank >= {} with axis {}",
                    self.name(),
                    self.min_rank.max(self.axis + 1),
                    self.axis
                ),
            ));
        }
        if let Some(h) = self.units
            && (h == 0 || !shape[self.axis].is_multiple_of(h))
        {
            return Err(Error::pattern(
                name,
                shape,
                format!(
                    "{h} heads do not divide axis {} of length {}",
                    self.axis, shape[self.axis]
                ),
            ));
        }
        Ok(())
    }
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], s: f64) -> Result<Mask> {
        check_sparsity(s)?;
        check_len(name, shape, scores)?;
        self.check(name, shape)?;
        let dim = shape[self.axis];
        let stride: usize = shape[self.axis + 1..].iter().product();
        let units = self.units.unwrap_or(dim);
        let per = (dim / units.max(1)).max(1);
        Ok(group_mask(
            scores,
            units,
            |i| (i / stride.max(1)) % dim / per,
            s,
        ))
    }
}

/// Blocks of `h x w` in the matrix view (last axis = columns); both dims must divide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Block height (rows).
    pub h: usize,
    /// Block width (columns).
    pub w: usize,
}

impl Granularity for Blocks {
    fn name(&self) -> String {
        format!("blocks({}x{})", self.h, self.w)
    }
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        let (r, c) = matrix_dims(shape);
        if self.h == 0 || self.w == 0 || !r.is_multiple_of(self.h) || !c.is_multiple_of(self.w) {
            return Err(Error::pattern(
                name,
                shape,
                format!("{}x{} blocks do not tile a {r}x{c} matrix", self.h, self.w),
            ));
        }
        Ok(())
    }
    fn mask(&self, name: &str, shape: &[usize], scores: &[f32], s: f64) -> Result<Mask> {
        check_sparsity(s)?;
        check_len(name, shape, scores)?;
        self.check(name, shape)?;
        let (r, c) = matrix_dims(shape);
        let bc = c / self.w;
        let groups = (r / self.h) * bc;
        Ok(group_mask(
            scores,
            groups,
            |i| (i / c / self.h) * bc + (i % c) / self.w,
            s,
        ))
    }
}

/// A granularity from its CLI spelling: `unstructured`, `N:M` (e.g. `2:4`), `rows`, `cols` /
/// `columns`, `row-balanced`, `blocks:HxW`, `heads:H` (axis 0), `channels` (output) or
/// `in-channels`.
pub fn parse(spec: &str) -> Result<Box<dyn Granularity>> {
    let bad = || {
        Error::invalid(
            "pattern",
            format!(
                "{spec:?} (expected unstructured, N:M, rows, cols, row-balanced, blocks:HxW, heads:H, channels, in-channels)"
            ),
        )
    };
    let s = spec.trim().to_ascii_lowercase();
    Ok(match s.as_str() {
        "unstructured" => Box::new(Unstructured),
        "row-balanced" => Box::new(RowBalanced),
        "rows" => Box::new(AxisSlices::rows()),
        "cols" | "columns" => Box::new(AxisSlices::columns()),
        "channels" => Box::new(AxisSlices::channels(0)),
        "in-channels" => Box::new(AxisSlices::channels(1)),
        _ => {
            if let Some(b) = s.strip_prefix("blocks:") {
                let (h, w) = b.split_once('x').ok_or_else(bad)?;
                let (h, w) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
                if h == 0 || w == 0 {
                    return Err(bad());
                }
                Box::new(Blocks { h, w })
            } else if let Some(h) = s.strip_prefix("heads:") {
                let h: usize = h.parse().map_err(|_| bad())?;
                if h == 0 {
                    return Err(bad());
                }
                Box::new(AxisSlices::heads(h, 0))
            } else if let Some((n, m)) = s.split_once(':') {
                let (n, m) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                Box::new(NM::new(n, m)?)
            } else {
                return Err(bad());
            }
        }
    })
}

//! Scopes: which tensors are pruned and where the budget is spent. Per layer, every selected tensor
//! reaches the target sparsity on its own; globally, all selected tensors are ranked together
//! (unstructured only), with an optional minimum density per tensor.
//!
//! Selection: a tensor is pruned when its name matches `include` (if given), does not match
//! `exclude` (if given), and, unless overridden, it has at least 2 dimensions and is not an
//! embedding (name matching [`EMBEDDING_RE`]).
use crate::granularity::{Granularity, kept_count, topk_indices};
use crate::param::{Mask, ParamRef};
use crate::{Error, Result, check_sparsity};
use regex::Regex;

/// Names treated as embeddings (excluded by default): containing `embed` (any case), or a `wte` /
/// `wpe` path segment (GPT-2).
pub const EMBEDDING_RE: &str = r"(?i)embed|(^|\.)(wte|wpe)(\.|$)";

/// Where the sparsity budget is spent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScopeKind {
    /// Every selected tensor reaches the target on its own.
    Layer,
    /// All selected tensors ranked together; each keeps at least `min_density` of its elements.
    Global {
        /// Floor on each tensor's density, in `[0, 1]`.
        min_density: f64,
    },
}

/// Tensor selection and budget placement.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Per layer or global.
    pub kind: ScopeKind,
    include: Option<Regex>,
    exclude: Option<Regex>,
    /// Prune tensors of rank < 2 too (biases, norms); off by default.
    pub include_1d: bool,
    /// Prune embeddings too; off by default.
    pub include_embeddings: bool,
    embed: Regex,
}

fn compile(re: &str) -> Result<Regex> {
    Regex::new(re).map_err(|source| Error::Regex {
        pattern: re.to_string(),
        source,
    })
}

impl Scope {
    /// Per-layer scope, default selection.
    pub fn layer() -> Self {
        Scope {
            kind: ScopeKind::Layer,
            include: None,
            exclude: None,
            include_1d: false,
            include_embeddings: false,
            embed: Regex::new(EMBEDDING_RE).expect("constant regex"),
        }
    }
    /// Global scope with a minimum density per tensor in `[0, 1]`.
    pub fn global(min_density: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_density) {
            return Err(Error::invalid(
                "min density",
                format!("{min_density} is outside [0, 1]"),
            ));
        }
        Ok(Scope {
            kind: ScopeKind::Global { min_density },
            ..Scope::layer()
        })
    }
    /// Only tensors whose name matches `re` (unanchored search, Rust regex syntax).
    pub fn include(mut self, re: &str) -> Result<Self> {
        self.include = Some(compile(re)?);
        Ok(self)
    }
    /// No tensor whose name matches `re`.
    pub fn exclude(mut self, re: &str) -> Result<Self> {
        self.exclude = Some(compile(re)?);
        Ok(self)
    }
    /// Sets whether rank < 2 tensors may be pruned.
    pub fn with_1d(mut self, yes: bool) -> Self {
        self.include_1d = yes;
        self
    }
    /// Sets whether embeddings may be pruned.
    pub fn with_embeddings(mut self, yes: bool) -> Self {
        self.include_embeddings = yes;
        self
    }
    /// Whether one tensor is selected.
    pub fn selects(&self, name: &str, shape: &[usize]) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(name))
            && (self.include_1d || shape.len() >= 2)
            && (self.include_embeddings || !self.embed.is_match(name))
    }
    /// Selection over a list of `(name, shape)`. Errors when a regex matches no name at all, or
    /// when nothing is selected.
    pub fn select(&self, tensors: &[(&str, &[usize])]) -> Result<Vec<bool>> {
        let sample = || {
            let names: Vec<&str> = tensors.iter().take(5).map(|t| t.0).collect();
            let more = if tensors.len() > 5 { ", ..." } else { "" };
            format!("{}{more}", names.join(", "))
        };
        for (which, re) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Some(re) = re
                && !tensors.iter().any(|(n, _)| re.is_match(n))
            {
                return Err(Error::NoMatch {
                    which,
                    pattern: re.as_str().to_string(),
                    sample: sample(),
                });
            }
        }
        let sel: Vec<bool> = tensors.iter().map(|(n, s)| self.selects(n, s)).collect();
        if !sel.iter().any(|&b| b) {
            return Err(Error::NothingSelected(format!(
                "no tensor passes the selection (1-D tensors and embeddings are excluded unless \
                 asked for) among {} tensors: {}",
                tensors.len(),
                sample()
            )));
        }
        Ok(sel)
    }
}

/// Sets the scores of previously pruned elements to -inf so that a new mask never revives them
/// while it keeps no more than before (masks shrink monotonically under gradual schedules).
pub fn restrict_scores(scores: &mut [f32], prev: &[bool]) {
    for (s, &k) in scores.iter_mut().zip(prev) {
        if !k {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Masks for every param at `sparsity`: `None` for params the selection leaves alone.
///
/// Global scope (elementwise granularities only) ranks the concatenation of the selected tensors
/// in the given order: ties go to the earlier tensor, then to the lower flat index. Each tensor
/// first keeps its own best `ceil(min_density * n)`; the rest of the budget
/// `round_half_even((1 - s) * N)` goes to the best remaining elements. When the floors alone
/// exceed the budget, the floors win.
pub fn compute_masks(
    params: &[ParamRef<'_>],
    scores: &[Vec<f32>],
    selected: &[bool],
    granularity: &dyn Granularity,
    kind: ScopeKind,
    sparsity: f64,
) -> Result<Vec<Option<Mask>>> {
    check_sparsity(sparsity)?;
    if params.len() != scores.len() || params.len() != selected.len() {
        return Err(Error::mismatch(
            "compute_masks",
            format!(
                "{} params, {} score vectors, {} selection flags",
                params.len(),
                scores.len(),
                selected.len()
            ),
        ));
    }
    for (p, s) in params.iter().zip(scores) {
        p.validate()?;
        if s.len() != p.numel() {
            return Err(Error::pattern(
                p.name,
                p.shape,
                format!("{} scores for {} elements", s.len(), p.numel()),
            ));
        }
    }
    for (p, _) in params.iter().zip(selected).filter(|(_, s)| **s) {
        granularity.check(p.name, p.shape)?;
    }
    let global = match kind {
        ScopeKind::Global { min_density } if granularity.fixed_density().is_none() => {
            // as `Scope::global` checks it (the enum can be built directly): NaN counted as 0
            if !(0.0..=1.0).contains(&min_density) {
                return Err(Error::invalid(
                    "min density",
                    format!("{min_density} is outside [0, 1]"),
                ));
            }
            if !granularity.is_elementwise() {
                return Err(Error::invalid(
                    "scope",
                    format!(
                        "global scope ranks single elements across tensors; {} is not elementwise \
                         (use unstructured, or per-layer scope)",
                        granularity.name()
                    ),
                ));
            }
            Some(min_density)
        }
        _ => None,
    };
    let Some(min_density) = global else {
        return params
            .iter()
            .zip(scores)
            .zip(selected)
            .map(|((p, s), &sel)| {
                sel.then(|| granularity.mask(p.name, p.shape, s, sparsity))
                    .transpose()
            })
            .collect();
    };
    // global, elementwise
    let mut out: Vec<Option<Mask>> = params
        .iter()
        .zip(selected)
        .map(|(p, &sel)| sel.then(|| vec![false; p.numel()]))
        .collect();
    let total: usize = params
        .iter()
        .zip(selected)
        .filter(|(_, s)| **s)
        .map(|(p, _)| p.numel())
        .sum();
    let budget = kept_count(total, sparsity);
    // One key per selected element, tensors concatenated in order (16 bytes per element in all).
    // Each tensor's floor is marked +inf so that it ranks before everything; NaN and +inf scores
    // become f64::MAX, above every f32 score and below the floors.
    let mut reserved = 0usize;
    let mut keys: Vec<f64> = Vec::with_capacity(total);
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for (t, (p, s)) in params.iter().zip(scores).enumerate() {
        if !selected[t] {
            continue;
        }
        let at = keys.len();
        starts.push((t, at));
        keys.extend(s.iter().map(|&x| {
            if x.is_nan() || x == f32::INFINITY {
                f64::MAX
            } else {
                f64::from(x)
            }
        }));
        let floor =
            (((min_density * p.numel() as f64) - 1e-9).ceil().max(0.0) as usize).min(p.numel());
        if floor > 0 {
            for i in topk_indices(&keys[at..], floor) {
                keys[at + i] = f64::INFINITY;
            }
            reserved += floor;
        }
    }
    for g in topk_indices(&keys, budget.max(reserved)) {
        let (t, at) = starts[starts.partition_point(|&(_, at)| at <= g) - 1];
        if let Some(m) = out[t].as_mut() {
            m[g - at] = true;
        }
    }
    Ok(out)
}

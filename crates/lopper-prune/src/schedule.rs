//! Schedules (when and how much) and the [`Pruner`] a trainer drives with them.
//!
//! A trainer calls [`Pruner::observe`] after each backward pass (criteria that accumulate
//! gradients need it) and [`Pruner::after_step`] after each optimizer step: it prunes when the
//! schedule says so and re-applies every mask, so pruned weights stay exactly zero whatever the
//! optimizer did. Gradual pruning never revives a pruned weight: each new mask is a subset of the
//! previous one.
use crate::criterion::Criterion;
use crate::granularity::Granularity;
use crate::param::{Mask, Param, ParamRef, apply_mask};
use crate::scope::{Scope, compute_masks, restrict_scores};
use crate::stats::{SparsityReport, TensorStats, magnitude};
use crate::{Error, Result, check_sparsity};
use std::collections::BTreeMap;

/// When to prune and to which sparsity.
pub trait Schedule {
    /// Target sparsity in effect at `step` (0 before pruning starts).
    fn sparsity_at(&self, step: u64) -> f64;
    /// Whether masks are recomputed at `step`.
    fn is_prune_step(&self, step: u64) -> bool;
}

/// Prune once, at `step`, to `sparsity`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneShot {
    /// The step at which to prune.
    pub step: u64,
    /// Target sparsity in `[0, 1)`.
    pub sparsity: f64,
}

impl OneShot {
    /// A one-shot schedule; errors when the sparsity is outside `[0, 1)`.
    pub fn new(step: u64, sparsity: f64) -> Result<Self> {
        check_sparsity(sparsity)?;
        Ok(OneShot { step, sparsity })
    }
}

impl Schedule for OneShot {
    fn sparsity_at(&self, step: u64) -> f64 {
        if step >= self.step {
            self.sparsity
        } else {
            0.0
        }
    }
    fn is_prune_step(&self, step: u64) -> bool {
        step == self.step
    }
}

/// Never prunes by itself: the owner calls [`Pruner::prune_now`] (used by iterative pruning).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Manual;

impl Schedule for Manual {
    fn sparsity_at(&self, _: u64) -> f64 {
        0.0
    }
    fn is_prune_step(&self, _: u64) -> bool {
        false
    }
}

/// Gradual polynomial pruning (Zhu & Gupta 2017):
/// `s_t = s_f + (s_0 - s_f) * (1 - (t - t0) / (t1 - t0))^e` at the prune steps
/// `t = t0, t0 + dt, ...` and `t1` (the end is always a prune step), constant in between,
/// 0 before `t0` and `s_f` after `t1`. The paper's exponent is 3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Polynomial {
    /// `s_0`, the sparsity at the first prune step.
    pub initial: f64,
    /// `s_f`, the final sparsity.
    pub final_sparsity: f64,
    /// `t0`.
    pub begin: u64,
    /// `t1 >= t0`.
    pub end: u64,
    /// `dt >= 1`.
    pub frequency: u64,
    /// `e > 0`.
    pub exponent: f64,
}

impl Polynomial {
    /// A validated polynomial schedule.
    pub fn new(
        initial: f64,
        final_sparsity: f64,
        begin: u64,
        end: u64,
        frequency: u64,
        exponent: f64,
    ) -> Result<Self> {
        check_sparsity(initial)?;
        check_sparsity(final_sparsity)?;
        if initial > final_sparsity {
            return Err(Error::invalid(
                "schedule",
                format!("initial sparsity {initial} exceeds final {final_sparsity}"),
            ));
        }
        if end < begin || frequency == 0 || !(exponent.is_finite() && exponent > 0.0) {
            return Err(Error::invalid(
                "schedule",
                format!(
                    "need begin <= end, frequency >= 1, exponent > 0; got begin {begin}, end {end}, \
                     frequency {frequency}, exponent {exponent}"
                ),
            ));
        }
        Ok(Polynomial {
            initial,
            final_sparsity,
            begin,
            end,
            frequency,
            exponent,
        })
    }
    fn at_prune_step(&self, t: u64) -> f64 {
        if t >= self.end {
            return self.final_sparsity;
        }
        let frac = (t - self.begin) as f64 / (self.end - self.begin) as f64;
        self.final_sparsity
            + (self.initial - self.final_sparsity) * (1.0 - frac).powf(self.exponent)
    }
}

impl Schedule for Polynomial {
    fn sparsity_at(&self, step: u64) -> f64 {
        if step < self.begin {
            return 0.0;
        }
        if step >= self.end {
            return self.final_sparsity;
        }
        let last = self.begin + (step - self.begin) / self.frequency * self.frequency;
        self.at_prune_step(last)
    }
    fn is_prune_step(&self, step: u64) -> bool {
        step >= self.begin
            && step <= self.end
            && ((step - self.begin).is_multiple_of(self.frequency) || step == self.end)
    }
}

/// One pruning event.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneReport {
    /// Step at which it happened.
    pub step: u64,
    /// Target sparsity.
    pub sparsity: f64,
    /// Accounting of the pruned tensors (kept magnitude relative to the values before this event).
    pub report: SparsityReport,
}

/// Criterion + granularity + scope + schedule, and the masks they produced.
pub struct Pruner {
    criterion: Box<dyn Criterion>,
    granularity: Box<dyn Granularity>,
    scope: Scope,
    schedule: Box<dyn Schedule>,
    masks: BTreeMap<String, Mask>,
}

impl Pruner {
    /// A pruner with no mask yet.
    pub fn new(
        criterion: Box<dyn Criterion>,
        granularity: Box<dyn Granularity>,
        scope: Scope,
        schedule: Box<dyn Schedule>,
    ) -> Self {
        Pruner {
            criterion,
            granularity,
            scope,
            schedule,
            masks: BTreeMap::new(),
        }
    }

    /// Feeds one step's values and gradients to the criterion (selected tensors only).
    pub fn observe(&mut self, params: &[ParamRef<'_>]) -> Result<()> {
        for p in params {
            if self.scope.selects(p.name, p.shape) {
                self.criterion.observe(*p)?;
            }
        }
        Ok(())
    }

    /// The hook to call after every optimizer step: prunes when the schedule says so, then
    /// re-applies all masks. Returns the event when pruning happened.
    pub fn after_step(
        &mut self,
        step: u64,
        params: &mut [Param<'_>],
    ) -> Result<Option<PruneReport>> {
        let event = if self.schedule.is_prune_step(step) {
            let s = self.schedule.sparsity_at(step);
            Some(self.prune_now(step, s, params)?)
        } else {
            None
        };
        self.apply_masks(params)?;
        Ok(event)
    }

    /// Prunes now to `sparsity` (never reviving a pruned weight) and zeroes the pruned values.
    pub fn prune_now(
        &mut self,
        step: u64,
        sparsity: f64,
        params: &mut [Param<'_>],
    ) -> Result<PruneReport> {
        let refs: Vec<ParamRef<'_>> = params.iter().map(|p| p.as_ref()).collect();
        let names: Vec<(&str, &[usize])> = refs.iter().map(|p| (p.name, p.shape)).collect();
        let selected = self.scope.select(&names)?;
        let mut scores = Vec::with_capacity(refs.len());
        for (p, &sel) in refs.iter().zip(&selected) {
            if sel {
                let mut s = self.criterion.score(*p)?;
                if let Some(prev) = self.masks.get(p.name)
                    && prev.len() == s.len()
                {
                    restrict_scores(&mut s, prev);
                }
                scores.push(s);
            } else {
                scores.push(vec![0.0; p.numel()]);
            }
        }
        let masks = compute_masks(
            &refs,
            &scores,
            &selected,
            self.granularity.as_ref(),
            self.scope.kind,
            sparsity,
        )?;
        let mut stats = Vec::new();
        let mut mags = Vec::new();
        for (p, m) in refs.iter().zip(&masks) {
            if let Some(m) = m {
                stats.push(TensorStats::from_mask(p.name, p.shape, p.values, m)?);
                mags.push(magnitude(p.values));
            }
        }
        for (p, m) in params.iter_mut().zip(masks) {
            if let Some(m) = m {
                apply_mask(p.values, &m)?;
                self.masks.insert(p.name.to_string(), m);
            }
        }
        Ok(PruneReport {
            step,
            sparsity,
            report: SparsityReport::new(stats, Some(&mags)),
        })
    }

    /// Zeroes every masked-out value (the hook's second half; cheap, call it after each step).
    pub fn apply_masks(&self, params: &mut [Param<'_>]) -> Result<()> {
        for p in params.iter_mut() {
            if let Some(m) = self.masks.get(p.name) {
                apply_mask(p.values, m)?;
            }
        }
        Ok(())
    }

    /// Zeroes the gradient of masked-out weights (optional: keeps optimizer state clean).
    pub fn mask_grad(&self, name: &str, grad: &mut [f32]) -> Result<()> {
        match self.masks.get(name) {
            Some(m) => apply_mask(grad, m),
            None => Ok(()),
        }
    }

    /// The current mask of tensor `name`, if it was pruned.
    pub fn mask(&self, name: &str) -> Option<&Mask> {
        self.masks.get(name)
    }

    /// All current masks by tensor name.
    pub fn masks(&self) -> &BTreeMap<String, Mask> {
        &self.masks
    }

    /// The schedule's target at `step`.
    pub fn sparsity_at(&self, step: u64) -> f64 {
        self.schedule.sparsity_at(step)
    }
}

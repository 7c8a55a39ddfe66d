//! Magnitude pruning stages: gradual (Zhu-Gupta, switching layers to Csr past a sparsity) and
//! one-shot masks on dense compute.
use super::{
    LayerScope, current_mask, layer_mut, mask_from_f32, mask_sparsity, mask_to_f32, pct,
    replace_weight,
};
use crate::callback::{Callback, CallbackState, Ctx};
use crate::{Result, invalid};
use lopper_nn::{Linear, Weight, WeightKind};
use lopper_prune::criterion::abs_key;
use lopper_prune::granularity::{kept_count, topk_mask};
use lopper_prune::schedule::{Polynomial, Schedule};
use std::collections::{BTreeMap, BTreeSet};

/// Keep-masks by layer name.
type Masks = BTreeMap<String, Vec<bool>>;

/// The keep-mask at `sparsity` by magnitude, never reviving an entry off `prev`: the
/// `kept_count(n, sparsity)` largest `|w|` among `prev` (ties to the lower index).
fn magnitude_mask(w: &[f32], prev: &[bool], sparsity: f64) -> Vec<bool> {
    let live = prev.iter().filter(|&&b| b).count();
    let k = kept_count(w.len(), sparsity).min(live);
    let scores: Vec<f32> = w
        .iter()
        .zip(prev)
        .map(|(&x, &p)| if p { abs_key(x) } else { f32::NEG_INFINITY })
        .collect();
    topk_mask(&scores, k)
}

/// The current keep-mask of a layer, or an error when its kind has none (low-rank, LoRA).
fn layer_mask(l: &Linear, stage: &str) -> Result<Vec<bool>> {
    current_mask(l.weight(), l.out_features(), l.in_features()).ok_or_else(|| {
        invalid(
            stage,
            format!(
                "layer {} is {}; magnitude pruning needs a dense, masked or csr weight",
                l.name,
                l.weight().kind_name()
            ),
        )
    })
}

/// Configuration of [`GradualMagnitude`].
#[derive(Clone, Debug, PartialEq)]
pub struct GradualMagnitudeConfig {
    /// Final sparsity `s_f` in `[0, 1)`.
    pub target: f64,
    /// First pruning step `t0`.
    pub start: u64,
    /// Last pruning step `t1 >= t0` (the target holds from there on); must be a step of the run.
    pub end: u64,
    /// Prune every this many steps (>= 1).
    pub every: u64,
    /// Sparsity at the first pruning step `s_0` (default 0).
    pub initial: f64,
    /// Exponent of the polynomial (default 3, the paper's).
    pub exponent: f64,
    /// Layers pruned.
    pub scope: LayerScope,
    /// From this sparsity on a layer runs as Csr (compute scales with nnz); below it, Masked (dense
    /// compute). Default 0.7, the CPU crossover of the sparse kernels. In `[0, 1]`; 1 never switches.
    pub switch_to_csr_at: f64,
}

impl Default for GradualMagnitudeConfig {
    fn default() -> Self {
        GradualMagnitudeConfig {
            target: 0.8,
            start: 0,
            end: 0,
            every: 1,
            initial: 0.0,
            exponent: 3.0,
            scope: LayerScope::all(),
            switch_to_csr_at: 0.7,
        }
    }
}

/// Gradual magnitude pruning (Zhu & Gupta 2017) on the polynomial schedule of
/// [`lopper_prune::schedule::Polynomial`]: at each pruning step `t` (in `before_step`, so step `t`
/// trains at the new sparsity), every selected layer keeps the `kept_count(M*K, s_t)` entries of
/// largest magnitude among those it still has (masks only shrink). A layer below
/// `switch_to_csr_at` is Masked (dense compute); at the first pruning step whose sparsity reaches
/// it, it becomes Csr (`WeightKind::CsrMask`, function kept) and stays Csr, later steps pruning the
/// Csr further. Each change remaps the optimizer state of `{layer}.weight` to the survivors.
pub struct GradualMagnitude {
    cfg: GradualMagnitudeConfig,
    schedule: Polynomial,
    name: String,
    layers: Vec<String>,
    masks: BTreeMap<String, Vec<bool>>,
    /// Layers already switched to Csr.
    csr: BTreeSet<String>,
    last_step: Option<u64>,
    restored: bool,
}

impl GradualMagnitude {
    /// A validated stage; errors name `gradual_magnitude`.
    pub fn new(cfg: GradualMagnitudeConfig) -> Result<Self> {
        let what = "gradual_magnitude";
        if !(cfg.target.is_finite() && (0.0..1.0).contains(&cfg.target)) {
            return Err(invalid(
                what,
                format!("target sparsity {} is outside [0, 1)", cfg.target),
            ));
        }
        if cfg.end < cfg.start {
            return Err(invalid(
                what,
                format!("end {} is before start {}", cfg.end, cfg.start),
            ));
        }
        if cfg.every == 0 {
            return Err(invalid(what, "every must be at least 1"));
        }
        if !(0.0..=1.0).contains(&cfg.switch_to_csr_at) {
            return Err(invalid(
                what,
                format!(
                    "switch_to_csr_at {} is outside [0, 1]",
                    cfg.switch_to_csr_at
                ),
            ));
        }
        let schedule = Polynomial::new(
            cfg.initial,
            cfg.target,
            cfg.start,
            cfg.end,
            cfg.every,
            cfg.exponent,
        )
        .map_err(|e| invalid(what, e.to_string()))?;
        Ok(GradualMagnitude {
            cfg,
            schedule,
            name: what.to_string(),
            layers: Vec::new(),
            masks: BTreeMap::new(),
            csr: BTreeSet::new(),
            last_step: None,
            restored: false,
        })
    }
    /// Renames the stage (its events and checkpoint key), e.g. when a recipe has two of them.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The schedule's target sparsity in effect at `step`.
    pub fn sparsity_at(&self, step: u64) -> f64 {
        self.schedule.sparsity_at(step)
    }
    /// Whether `step` is a pruning step.
    pub fn is_prune_step(&self, step: u64) -> bool {
        self.schedule.is_prune_step(step)
    }
    /// The current masks by layer name.
    pub fn masks(&self) -> &BTreeMap<String, Vec<bool>> {
        &self.masks
    }

    fn prune(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let (t, s) = (ctx.step, self.schedule.sparsity_at(ctx.step));
        let (mut n_csr, mut n_masked) = (0, 0);
        for name in &self.layers {
            let l = layer_mut(ctx.model, name, &self.name)?;
            let prev = layer_mask(l, &self.name)?;
            let mask = magnitude_mask(&l.dense_weight(), &prev, s);
            let was_csr = matches!(l.weight(), Weight::Csr { .. });
            let to_csr = was_csr || s >= self.cfg.switch_to_csr_at;
            let kind = if to_csr {
                WeightKind::CsrMask(mask.clone())
            } else {
                WeightKind::Masked(mask.clone())
            };
            replace_weight(ctx.model, ctx.optimizer, name, &self.name, |l| {
                Ok(l.weight()
                    .convert(&kind, l.out_features(), l.in_features(), &l.name)?)
            })?;
            if to_csr && !was_csr {
                ctx.log.event(
                    t,
                    &self.name,
                    format!(
                        "step {t}: {name} -> csr at {} sparsity",
                        pct(mask_sparsity(&mask))
                    ),
                );
            }
            if to_csr {
                self.csr.insert(name.clone());
                n_csr += 1;
            } else {
                n_masked += 1;
            }
            self.masks.insert(name.clone(), mask);
        }
        ctx.log.event(
            t,
            &self.name,
            format!(
                "step {t}: {} layers pruned by magnitude to {} ({n_csr} csr, {n_masked} masked)",
                self.layers.len(),
                pct(s)
            ),
        );
        self.last_step = Some(t);
        Ok(())
    }
}

/// Puts every layer with a saved mask back into the kind it had (Csr or Masked), values as they
/// are now, no remap (the checkpoint's optimizer state comes after, in these layouts).
fn restore_masks(
    ctx: &mut Ctx<'_>,
    masks: &BTreeMap<String, Vec<bool>>,
    csr: impl Fn(&str) -> bool,
    stage: &str,
) -> Result<()> {
    for (name, mask) in masks {
        let l = layer_mut(ctx.model, name, stage)?;
        if mask.len() != l.out_features() * l.in_features() {
            return Err(invalid(
                stage,
                format!(
                    "checkpoint mask of {name} has {} entries, layer is {}x{}",
                    mask.len(),
                    l.out_features(),
                    l.in_features()
                ),
            ));
        }
        let want = if csr(name) { "csr" } else { "masked" };
        let (m, k) = (l.out_features(), l.in_features());
        if l.weight().kind_name() == want && current_mask(l.weight(), m, k).as_ref() == Some(mask) {
            continue; // already restored (the checkpoint loader restores kinds and patterns)
        }
        let kind = if want == "csr" {
            WeightKind::CsrMask(mask.clone())
        } else {
            WeightKind::Masked(mask.clone())
        };
        l.set_kind(&kind)?;
    }
    Ok(())
}

fn masks_state(masks: &BTreeMap<String, Vec<bool>>, last_step: Option<u64>) -> CallbackState {
    CallbackState {
        tensors: masks
            .iter()
            .map(|(n, m)| (format!("mask.{n}"), mask_to_f32(m)))
            .collect(),
        json: serde_json::json!({ "last_step": last_step }),
    }
}

fn load_masks(state: &CallbackState, stage: &str) -> Result<(Masks, Option<u64>)> {
    let mut masks = BTreeMap::new();
    for (k, v) in &state.tensors {
        let name = k.strip_prefix("mask.").ok_or_else(|| {
            invalid(
                stage,
                format!("unexpected tensor {k:?} in checkpoint state"),
            )
        })?;
        masks.insert(name.to_string(), mask_from_f32(v, stage)?);
    }
    let last_step = match state.json.get("last_step") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| invalid(stage, format!("checkpoint last_step {v} is not a step")))?,
        ),
    };
    Ok((masks, last_step))
}

impl Callback for GradualMagnitude {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.cfg.end >= ctx.total_steps {
            return Err(invalid(
                &self.name,
                format!(
                    "end {} is not a step of this {}-step run (steps 0..{})",
                    self.cfg.end, ctx.total_steps, ctx.total_steps
                ),
            ));
        }
        self.layers = self.cfg.scope.select(ctx.model, &self.name)?;
        if self.restored {
            let csr = &self.csr;
            restore_masks(ctx, &self.masks, |n| csr.contains(n), &self.name)?;
            ctx.log.event(
                ctx.step,
                &self.name,
                format!(
                    "resumed with {} pruned layers (last pruning step {:?})",
                    self.masks.len(),
                    self.last_step
                ),
            );
        }
        Ok(())
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.schedule.is_prune_step(ctx.step) && self.last_step.is_none_or(|l| ctx.step > l) {
            self.prune(ctx)?;
        }
        Ok(())
    }
    fn state(&self) -> CallbackState {
        let mut s = masks_state(&self.masks, self.last_step);
        s.json["csr"] = serde_json::json!(self.csr);
        s
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        (self.masks, self.last_step) = load_masks(state, &self.name)?;
        self.csr = match state.json.get("csr") {
            None => BTreeSet::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| invalid(&self.name, format!("checkpoint csr list {v}: {e}")))?,
        };
        self.restored = true;
        Ok(())
    }
}

/// One-shot magnitude masks on dense compute, the usual way to "prune" (the baseline): at step
/// `at` (in `before_step`), every selected layer becomes Masked with its `kept_count(M*K, s)`
/// largest-magnitude entries; compute stays dense, so executed FLOPs do not fall.
pub struct MaskedMagnitude {
    sparsity: f64,
    at: u64,
    scope: LayerScope,
    name: String,
    masks: BTreeMap<String, Vec<bool>>,
    done: Option<u64>,
    restored: bool,
}

impl MaskedMagnitude {
    /// A validated stage; errors name `masked_magnitude`.
    pub fn new(sparsity: f64, at: u64, scope: LayerScope) -> Result<Self> {
        let name = "masked_magnitude";
        if !(sparsity.is_finite() && (0.0..1.0).contains(&sparsity)) {
            return Err(invalid(
                name,
                format!("sparsity {sparsity} is outside [0, 1)"),
            ));
        }
        Ok(MaskedMagnitude {
            sparsity,
            at,
            scope,
            name: name.to_string(),
            masks: BTreeMap::new(),
            done: None,
            restored: false,
        })
    }
    /// Renames the stage (its events and checkpoint key).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The masks by layer name (empty before step `at`).
    pub fn masks(&self) -> &BTreeMap<String, Vec<bool>> {
        &self.masks
    }
}

impl Callback for MaskedMagnitude {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.at >= ctx.total_steps {
            return Err(invalid(
                &self.name,
                format!(
                    "at {} is not a step of this {}-step run",
                    self.at, ctx.total_steps
                ),
            ));
        }
        self.scope.select(ctx.model, &self.name)?;
        if self.restored {
            restore_masks(ctx, &self.masks, |_| false, &self.name)?;
        }
        Ok(())
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if ctx.step != self.at || self.done.is_some() {
            return Ok(());
        }
        for name in self.scope.select(ctx.model, &self.name)? {
            let l = layer_mut(ctx.model, &name, &self.name)?;
            let prev = layer_mask(l, &self.name)?;
            let mask = magnitude_mask(&l.dense_weight(), &prev, self.sparsity);
            let kind = WeightKind::Masked(mask.clone());
            replace_weight(ctx.model, ctx.optimizer, &name, &self.name, |l| {
                Ok(l.weight()
                    .convert(&kind, l.out_features(), l.in_features(), &l.name)?)
            })?;
            self.masks.insert(name, mask);
        }
        ctx.log.event(
            ctx.step,
            &self.name,
            format!(
                "step {}: {} layers masked by magnitude to {} (dense compute)",
                ctx.step,
                self.masks.len(),
                pct(self.sparsity)
            ),
        );
        self.done = Some(ctx.step);
        Ok(())
    }
    fn state(&self) -> CallbackState {
        masks_state(&self.masks, self.done)
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        (self.masks, self.done) = load_masks(state, &self.name)?;
        self.restored = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_mask_keeps_largest_and_never_revives() {
        let w = [0.5, -3.0, 0.1, 2.0, -0.2, 1.0];
        let all = [true; 6];
        let m = magnitude_mask(&w, &all, 0.5);
        assert_eq!(m, vec![false, true, false, true, false, true]);
        // prev excludes index 1 (the largest): it must stay out
        let prev = [true, false, true, true, true, true];
        let m = magnitude_mask(&w, &prev, 0.5);
        assert_eq!(m, vec![true, false, false, true, false, true]);
    }

    #[test]
    fn bad_configs_name_the_stage() {
        let e = GradualMagnitude::new(GradualMagnitudeConfig {
            target: 1.5,
            end: 10,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("gradual_magnitude:"), "{e}");
        let e = MaskedMagnitude::new(-0.1, 0, LayerScope::all())
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("masked_magnitude:"), "{e}");
    }
}

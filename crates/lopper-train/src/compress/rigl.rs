//! Dynamic sparse training on Csr layers: RigL (Evci et al. 2020) and SET (Mocanu et al. 2018).
//!
//! The update rule is lopper-prune's `dst` (same layouts through
//! [`lopper_prune::dst::layout_densities`], same counts and ties through `kept_count` /
//! `topk_indices`, same cosine-annealed drop fraction), applied here to the layers' Csr patterns
//! rather than through `DynamicSparse` itself: that type keeps its masks private (a resumed run
//! could not restore them) and works on dense values, while a Csr layer is rebuilt from its
//! pattern. Random draws (initial masks, SET growth) come from a generator seeded by
//! `(seed, step, layer)`, so a resumed run draws exactly what the uninterrupted run would.
use super::{
    LayerScope, current_mask, gather, layer_mut, mask_from_f32, mask_to_f32, pct, stored_positions,
};
use crate::callback::{Callback, CallbackState, Ctx};
use crate::{Result, invalid};
use lopper_nn::Weight;
use lopper_prune::dst::{Grow, Layout, layout_densities};
use lopper_prune::granularity::{kept_count, topk_indices};
use lopper_sparse::Csr;
use lopper_tensor::MatRef;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand_distr_free::normal;

/// When RigL stops moving connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RiglEnd {
    /// This fraction of the run's steps, in (0, 1] (RigL: 0.75).
    Fraction(f64),
    /// This step.
    Step(u64),
}

/// Configuration of [`Rigl`].
#[derive(Clone, Debug, PartialEq)]
pub struct RiglConfig {
    /// Overall sparsity of the selected layers, in `[0, 1)`.
    pub sparsity: f64,
    /// Per-layer densities: uniform or ERK.
    pub layout: Layout,
    /// Update every `delta_t >= 1` steps (RigL: 100).
    pub delta_t: u64,
    /// Initial drop fraction in `[0, 1]`, cosine-annealed to 0 at `end` (RigL: 0.3).
    pub drop_fraction: f64,
    /// Last update (exclusive).
    pub end: RiglEnd,
    /// RigL (largest dense-gradient magnitude) or SET (random) growth.
    pub grow: Grow,
    /// Seed of the initial masks and of SET's growth.
    pub seed: u64,
    /// Layers made sparse (others stay dense).
    pub scope: LayerScope,
}

impl Default for RiglConfig {
    fn default() -> Self {
        RiglConfig {
            sparsity: 0.9,
            layout: Layout::Erk,
            delta_t: 100,
            drop_fraction: 0.3,
            end: RiglEnd::Fraction(0.75),
            grow: Grow::Gradient,
            seed: 0,
            scope: LayerScope::all(),
        }
    }
}

/// Dynamic sparse training from the first step. `on_begin`: random initial masks at the layout's
/// per-layer densities; the selected layers become Csr with them. Every `delta_t` steps before
/// `end` (not step 0): `before_step` asks those layers for their dense gradient; `after_backward`
/// drops the `k = kept_count(kept, 1 - f_t)` smallest-magnitude connections of each layer and grows
/// `k` inactive ones (largest `|dense grad|` for RigL, random for SET), rebuilds the layer's Csr
/// (survivors keep their values, RigL's grown ones start at 0, SET's at N(0, std of the kept)),
/// fills its `dw` from the dense gradient at the new pattern (so grown connections get their
/// gradient in this very step's optimizer update, as in RigL), remaps the optimizer state
/// (survivors gather, grown fresh) and drops the dense gradient. Per-layer nnz never changes.
pub struct Rigl {
    cfg: RiglConfig,
    name: String,
    layers: Vec<String>,
    masks: Vec<Vec<bool>>,
    end_step: u64,
    restored: bool,
}

fn rng_for(seed: u64, step: u64, layer: usize) -> StdRng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(layer as u64);
    StdRng::seed_from_u64(mix)
}

impl Rigl {
    /// A validated stage; errors name `rigl`.
    pub fn new(cfg: RiglConfig) -> Result<Self> {
        let what = "rigl";
        if !(cfg.sparsity.is_finite() && (0.0..1.0).contains(&cfg.sparsity)) {
            return Err(invalid(
                what,
                format!("sparsity {} is outside [0, 1)", cfg.sparsity),
            ));
        }
        if !(0.0..=1.0).contains(&cfg.drop_fraction) {
            return Err(invalid(
                what,
                format!("drop_fraction {} is outside [0, 1]", cfg.drop_fraction),
            ));
        }
        if cfg.delta_t == 0 {
            return Err(invalid(what, "delta_t must be at least 1"));
        }
        if let RiglEnd::Fraction(f) = cfg.end
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(invalid(what, format!("end fraction {f} is outside (0, 1]")));
        }
        Ok(Rigl {
            cfg,
            name: what.to_string(),
            layers: Vec::new(),
            masks: Vec::new(),
            end_step: 0,
            restored: false,
        })
    }
    /// Renames the stage.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The sparse layers' names, in order (after `on_begin`).
    pub fn layers(&self) -> &[String] {
        &self.layers
    }
    /// The current masks, in [`Rigl::layers`] order.
    pub fn masks(&self) -> &[Vec<bool>] {
        &self.masks
    }
    /// The step updates stop at (exclusive; after `on_begin`).
    pub fn end_step(&self) -> u64 {
        self.end_step
    }
    /// Whether masks move at `step`.
    pub fn is_update_step(&self, step: u64) -> bool {
        step > 0 && step < self.end_step && step.is_multiple_of(self.cfg.delta_t)
    }
    /// Cosine-annealed drop fraction at `step` (0 from the end on).
    pub fn drop_fraction_at(&self, step: u64) -> f64 {
        if step >= self.end_step {
            return 0.0;
        }
        let x = std::f64::consts::PI * step as f64 / self.end_step as f64;
        self.cfg.drop_fraction / 2.0 * (1.0 + x.cos())
    }

    /// Rebuilds layer `i`'s Csr with `mask`: values from `values` (dense (M, K)), `dw` from `grad`
    /// (dense (M, K)) at the new pattern when given; remaps the optimizer unless `remap` is false.
    fn rebuild(
        &self,
        ctx: &mut Ctx<'_>,
        i: usize,
        values: &[f32],
        grad: Option<&[f32]>,
        remap: bool,
    ) -> Result<()> {
        let name = &self.layers[i];
        let mask = &self.masks[i];
        let l = layer_mut(ctx.model, name, &self.name)?;
        let (m, k) = (l.out_features(), l.in_features());
        let w = Csr::from_mask(MatRef::new(values, m, k)?, mask)?;
        let wt = w.transpose();
        let mut dw = vec![0.0; w.nnz()];
        if let Some(g) = grad {
            let mut p = 0;
            for r in 0..m {
                let (cols, _) = w.row(r);
                for &c in cols {
                    dw[p] = g[r * k + c as usize]; // dW at (r, c) of the new pattern
                    p += 1;
                }
            }
        }
        let new = Weight::Csr { w, wt, dw };
        let g = gather(l.weight(), &new, m, k);
        l.set_weight(new)?;
        if remap {
            ctx.optimizer.remap(&format!("{name}.weight"), g.as_deref());
        }
        Ok(())
    }

    fn update(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let t = ctx.step;
        let f = self.drop_fraction_at(t);
        let (mut moved, mut total) = (0usize, 0usize);
        for i in 0..self.layers.len() {
            let l = layer_mut(ctx.model, &self.layers[i], &self.name)?;
            let values = l.dense_weight();
            let grad = l.dense_grad().map(<[f32]>::to_vec).ok_or_else(|| {
                invalid(
                    &self.name,
                    format!("layer {} has no dense gradient at an update step", l.name),
                )
            })?;
            l.request_dense_grad(false);
            let mut values = values;
            let m = &mut self.masks[i];
            let active: Vec<usize> = (0..m.len()).filter(|&j| m[j]).collect();
            total += active.len();
            let k = kept_count(active.len(), 1.0 - f); // round_half_even(f * kept), as lopper-prune's dst
            if k == 0 {
                continue;
            }
            // drop: the k smallest |w| among active (ties to the lower index)
            let keys: Vec<f64> = active
                .iter()
                .map(|&j| -f64::from(values[j].abs()))
                .collect();
            for j in topk_indices(&keys, k) {
                m[active[j]] = false;
                values[active[j]] = 0.0;
            }
            let inactive: Vec<usize> = (0..m.len()).filter(|&j| !m[j]).collect();
            let mut rng = rng_for(self.cfg.seed, t, i);
            let grown: Vec<usize> = match self.cfg.grow {
                Grow::Gradient => {
                    let keys: Vec<f64> =
                        inactive.iter().map(|&j| f64::from(grad[j].abs())).collect();
                    topk_indices(&keys, k)
                        .into_iter()
                        .map(|j| inactive[j])
                        .collect()
                }
                Grow::Random => sample(&mut rng, inactive.len(), k)
                    .iter()
                    .map(|j| inactive[j])
                    .collect(),
            };
            let std = if self.cfg.grow == Grow::Random {
                kept_std(&values, m)
            } else {
                0.0
            };
            for j in grown {
                m[j] = true;
                values[j] = if std > 0.0 {
                    normal(&mut rng, std)
                } else {
                    0.0
                };
            }
            moved += k;
            self.rebuild(ctx, i, &values, Some(&grad), true)?;
        }
        ctx.log.event(
            t,
            &self.name,
            format!(
                "step {t}: {} moved {moved} of {total} connections in {} layers (drop fraction {:.3})",
                match self.cfg.grow {
                    Grow::Gradient => "rigl",
                    Grow::Random => "set",
                },
                self.layers.len(),
                f
            ),
        );
        Ok(())
    }
}

/// Standard deviation of the kept values.
fn kept_std(values: &[f32], mask: &[bool]) -> f64 {
    let kept: Vec<f64> = values
        .iter()
        .zip(mask)
        .filter(|(_, k)| **k)
        .map(|(&x, _)| f64::from(x))
        .collect();
    let n = kept.len().max(1) as f64;
    let mean = kept.iter().sum::<f64>() / n;
    (kept.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// A N(0, std^2) draw by Box-Muller (rand's `StandardNormal` lives in rand_distr, which this crate
/// does not depend on).
mod rand_distr_free {
    use rand::Rng;
    pub fn normal(rng: &mut impl Rng, std: f64) -> f32 {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

impl Callback for Rigl {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.end_step = match self.cfg.end {
            RiglEnd::Fraction(f) => (f * ctx.total_steps as f64).round() as u64,
            RiglEnd::Step(s) => s,
        };
        let layers = self.cfg.scope.select(ctx.model, &self.name)?;
        let mut shapes = Vec::with_capacity(layers.len());
        for name in &layers {
            let l = layer_mut(ctx.model, name, &self.name)?;
            if stored_positions(l.weight(), l.out_features(), l.in_features()).is_none() {
                return Err(invalid(
                    &self.name,
                    format!("layer {name} is {}", l.weight().kind_name()),
                ));
            }
            shapes.push([l.out_features(), l.in_features()]);
        }
        self.layers = layers;
        // restored from a checkpoint, or a second `run` of the same trainer: keep the masks
        if self.restored || !self.masks.is_empty() {
            if self.masks.len() != self.layers.len() {
                return Err(invalid(
                    &self.name,
                    format!(
                        "checkpoint has {} masks for {} selected layers",
                        self.masks.len(),
                        self.layers.len()
                    ),
                ));
            }
            for i in 0..self.layers.len() {
                let [m, k] = shapes[i];
                if self.masks[i].len() != m * k {
                    return Err(invalid(
                        &self.name,
                        format!("checkpoint mask of {} does not fit {m}x{k}", self.layers[i]),
                    ));
                }
                let l = layer_mut(ctx.model, &self.layers[i], &self.name)?;
                if matches!(l.weight(), Weight::Csr { .. })
                    && current_mask(l.weight(), m, k).as_ref() == Some(&self.masks[i])
                {
                    continue; // already restored (the checkpoint loader restores patterns)
                }
                let values = l.dense_weight();
                self.rebuild(ctx, i, &values, None, false)?;
            }
            return Ok(());
        }
        let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        let dens = layout_densities(&refs, 1.0 - self.cfg.sparsity, self.cfg.layout)
            .map_err(|e| invalid(&self.name, e.to_string()))?;
        self.masks.clear();
        let (mut kept, mut all) = (0usize, 0usize);
        for (i, d) in dens.iter().enumerate() {
            let n = shapes[i][0] * shapes[i][1];
            let mut mask = vec![false; n];
            let mut rng = rng_for(self.cfg.seed, u64::MAX, i);
            for j in sample(&mut rng, n, kept_count(n, 1.0 - d)).iter() {
                mask[j] = true;
            }
            kept += kept_count(n, 1.0 - d);
            all += n;
            self.masks.push(mask);
            let values = layer_mut(ctx.model, &self.layers[i], &self.name)?.dense_weight();
            self.rebuild(ctx, i, &values, None, true)?;
        }
        // update steps: the multiples of delta_t in 1..min(end, total)
        let last = self.end_step.min(ctx.total_steps);
        let updates = last.saturating_sub(1) / self.cfg.delta_t;
        let when = if updates == 0 {
            format!(
                "no mask update in this run: delta_t = {} is not below step {last}, so the masks stay as drawn",
                self.cfg.delta_t
            )
        } else {
            format!(
                "{updates} updates: every {} steps until step {}",
                self.cfg.delta_t, self.end_step
            )
        };
        ctx.log.event(
            ctx.step,
            &self.name,
            format!(
                "step {}: {} layers -> csr with {:?} masks at {} overall sparsity ({when})",
                ctx.step,
                self.layers.len(),
                self.cfg.layout,
                pct(1.0 - kept as f64 / all.max(1) as f64),
            ),
        );
        Ok(())
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.is_update_step(ctx.step) {
            for name in &self.layers {
                layer_mut(ctx.model, name, &self.name)?.request_dense_grad(true);
            }
        }
        Ok(())
    }
    fn after_backward(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.is_update_step(ctx.step) {
            self.update(ctx)?;
        }
        Ok(())
    }
    fn state(&self) -> CallbackState {
        CallbackState {
            tensors: self
                .layers
                .iter()
                .zip(&self.masks)
                .enumerate()
                .map(|(i, (n, m))| (format!("mask.{i:04}.{n}"), mask_to_f32(m)))
                .collect(),
            json: serde_json::json!({ "layers": self.layers }),
        }
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        // keys sort by the zero-padded index, so the BTreeMap order is the layer order
        self.masks = state
            .tensors
            .values()
            .map(|v| mask_from_f32(v, &self.name))
            .collect::<Result<_>>()?;
        self.restored = true;
        Ok(())
    }
}

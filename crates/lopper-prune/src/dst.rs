//! Dynamic sparse training: SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).
//!
//! Every tensor keeps a fixed number of weights for the whole run. Every `delta_t` steps (until
//! `end_step`), each tensor drops the `k = round_half_even(f_t * kept)` kept weights of smallest
//! magnitude (ties to the lower index) and grows `k` others among the weights inactive after the
//! drop: RigL those of largest dense-gradient magnitude, SET uniformly at random. Grown weights
//! start at zero (RigL); SET draws them from N(0, std of the tensor's kept weights) as in the
//! paper. The drop fraction is cosine-annealed: `f_t = alpha / 2 * (1 + cos(pi * t / end_step))`.
//!
//! Initial layouts: uniform (every tensor at the target density) or ERK (density proportional to
//! `sum(shape) / prod(shape)`, tensors that would exceed density 1 made dense, RigL's rule).
use crate::granularity::{kept_count, topk_indices};
use crate::param::{Mask, Param, apply_mask};
use crate::stats::mask_density;
use crate::{Error, Result, check_sparsity};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand_distr::{Distribution, Normal};

/// How per-tensor densities are laid out at the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// Every tensor at the target density.
    Uniform,
    /// Erdos-Renyi-Kernel.
    Erk,
}

/// How new connections are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grow {
    /// SET: uniformly at random.
    Random,
    /// RigL: largest dense-gradient magnitude.
    Gradient,
}

/// Per-tensor densities of a layout so that the total kept count is `density * total` (up to
/// rounding), ERK capping tensors at density 1.
pub fn layout_densities(shapes: &[&[usize]], density: f64, layout: Layout) -> Result<Vec<f64>> {
    if !(density > 0.0 && density <= 1.0) {
        return Err(Error::invalid(
            "density",
            format!("{density} is outside (0, 1]"),
        ));
    }
    let numel: Vec<f64> = shapes
        .iter()
        .map(|s| s.iter().product::<usize>() as f64)
        .collect();
    match layout {
        Layout::Uniform => Ok(vec![density; shapes.len()]),
        Layout::Erk => {
            let raw: Vec<f64> = shapes
                .iter()
                .zip(&numel)
                .map(|(s, &n)| {
                    if n == 0.0 {
                        0.0
                    } else {
                        s.iter().sum::<usize>() as f64 / n
                    }
                })
                .collect();
            let budget = density * numel.iter().sum::<f64>();
            let mut dense = vec![false; shapes.len()];
            loop {
                let fixed: f64 = (0..shapes.len())
                    .filter(|&i| dense[i])
                    .map(|i| numel[i])
                    .sum();
                let free: f64 = (0..shapes.len())
                    .filter(|&i| !dense[i])
                    .map(|i| raw[i] * numel[i])
                    .sum();
                let eps = if free > 0.0 {
                    (budget - fixed) / free
                } else {
                    0.0
                };
                let over: Vec<usize> = (0..shapes.len())
                    .filter(|&i| !dense[i] && raw[i] * eps > 1.0)
                    .collect();
                if over.is_empty() {
                    return Ok((0..shapes.len())
                        .map(|i| {
                            if dense[i] {
                                1.0
                            } else {
                                (raw[i] * eps).clamp(0.0, 1.0)
                            }
                        })
                        .collect());
                }
                for i in over {
                    dense[i] = true;
                }
            }
        }
    }
}

/// Configuration of a dynamic sparse training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DstConfig {
    /// Overall density target in `(0, 1]`.
    pub density: f64,
    /// Initial layout.
    pub layout: Layout,
    /// SET or RigL growth.
    pub grow: Grow,
    /// Initial drop fraction `alpha` in `[0, 1]` (RigL: 0.3).
    pub drop_fraction: f64,
    /// Update every `delta_t >= 1` steps (RigL: 100).
    pub delta_t: u64,
    /// Last step with updates (RigL: 75% of training).
    pub end_step: u64,
    /// Seed of the initial masks and of SET's growth.
    pub seed: u64,
}

/// One update.
#[derive(Clone, Debug, PartialEq)]
pub struct DstUpdate {
    /// Step.
    pub step: u64,
    /// Drop fraction used.
    pub drop_fraction: f64,
    /// `(tensor, dropped = grown)` counts.
    pub changed: Vec<(String, usize)>,
}

/// SET / RigL state: one mask per tensor, fixed kept counts.
pub struct DynamicSparse {
    cfg: DstConfig,
    names: Vec<String>,
    masks: Vec<Mask>,
    rng: StdRng,
}

impl DynamicSparse {
    /// Lays out random initial masks over `params` (all of them: select with a
    /// [`crate::Scope`] beforehand) and zeroes the inactive weights.
    pub fn init(cfg: DstConfig, params: &mut [Param<'_>]) -> Result<Self> {
        check_sparsity(1.0 - cfg.density)
            .map_err(|_| Error::invalid("density", format!("{} is outside (0, 1]", cfg.density)))?;
        if !(0.0..=1.0).contains(&cfg.drop_fraction) || cfg.delta_t == 0 {
            return Err(Error::invalid(
                "dst",
                format!(
                    "need drop fraction in [0, 1] and delta_t >= 1, got {} and {}",
                    cfg.drop_fraction, cfg.delta_t
                ),
            ));
        }
        for p in params.iter() {
            p.as_ref().validate()?;
        }
        let shapes: Vec<&[usize]> = params.iter().map(|p| p.shape).collect();
        let dens = layout_densities(&shapes, cfg.density, cfg.layout)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut masks = Vec::with_capacity(params.len());
        for (p, d) in params.iter_mut().zip(dens) {
            let n = p.values.len();
            let mut m = vec![false; n];
            for i in sample(&mut rng, n, kept_count(n, 1.0 - d)).iter() {
                m[i] = true;
            }
            apply_mask(p.values, &m)?;
            masks.push(m);
        }
        Ok(DynamicSparse {
            cfg,
            names: params.iter().map(|p| p.name.to_string()).collect(),
            masks,
            rng,
        })
    }

    /// Cosine-annealed drop fraction at `step` (0 from `end_step` on).
    pub fn drop_fraction_at(&self, step: u64) -> f64 {
        if step >= self.cfg.end_step {
            return 0.0;
        }
        let x = std::f64::consts::PI * step as f64 / self.cfg.end_step as f64;
        self.cfg.drop_fraction / 2.0 * (1.0 + x.cos())
    }

    /// Whether masks change at `step`.
    pub fn is_update_step(&self, step: u64) -> bool {
        step > 0 && step < self.cfg.end_step && step.is_multiple_of(self.cfg.delta_t)
    }

    fn check(&self, params: &[Param<'_>]) -> Result<()> {
        if params.len() != self.names.len()
            || params
                .iter()
                .zip(&self.names)
                .zip(&self.masks)
                .any(|((p, n), m)| p.name != n || p.values.len() != m.len())
        {
            return Err(Error::mismatch(
                "DynamicSparse",
                format!(
                    "expected the {} params it was built for, in the same order",
                    self.names.len()
                ),
            ));
        }
        Ok(())
    }

    /// The hook after every optimizer step: on update steps drops and grows (RigL needs each
    /// param's dense gradient), then zeroes every inactive weight.
    pub fn after_step(&mut self, step: u64, params: &mut [Param<'_>]) -> Result<Option<DstUpdate>> {
        self.check(params)?;
        let update = if self.is_update_step(step) {
            Some(self.update(step, params)?)
        } else {
            None
        };
        self.apply_masks(params)?;
        Ok(update)
    }

    fn update(&mut self, step: u64, params: &mut [Param<'_>]) -> Result<DstUpdate> {
        let f = self.drop_fraction_at(step);
        let mut changed = Vec::with_capacity(params.len());
        for (p, m) in params.iter_mut().zip(self.masks.iter_mut()) {
            let active: Vec<usize> = (0..m.len()).filter(|&i| m[i]).collect();
            let k = kept_count(active.len(), 1.0 - f);
            if k == 0 {
                changed.push((p.name.to_string(), 0));
                continue;
            }
            // drop: k smallest |w| among active (ties to the lower index)
            let keys: Vec<f64> = active
                .iter()
                .map(|&i| -f64::from(p.values[i].abs()))
                .collect();
            for j in topk_indices(&keys, k) {
                m[active[j]] = false;
            }
            let inactive: Vec<usize> = (0..m.len()).filter(|&i| !m[i]).collect();
            let grown: Vec<usize> = match self.cfg.grow {
                Grow::Gradient => {
                    let g = p.grad.ok_or_else(|| {
                        Error::mismatch(
                            "RigL growth",
                            format!("tensor {:?} has no gradient", p.name),
                        )
                    })?;
                    let keys: Vec<f64> = inactive.iter().map(|&i| f64::from(g[i].abs())).collect();
                    topk_indices(&keys, k)
                        .into_iter()
                        .map(|j| inactive[j])
                        .collect()
                }
                Grow::Random => sample(&mut self.rng, inactive.len(), k)
                    .iter()
                    .map(|j| inactive[j])
                    .collect(),
            };
            let std = {
                let kept: Vec<f32> = (0..m.len())
                    .filter(|&i| m[i])
                    .map(|i| p.values[i])
                    .collect();
                let n = kept.len().max(1) as f64;
                let mean = kept.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
                (kept
                    .iter()
                    .map(|&x| (f64::from(x) - mean).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt()
            };
            let normal = Normal::new(0.0, std.max(f64::MIN_POSITIVE))
                .map_err(|e| Error::invalid("dst", e.to_string()))?;
            for i in grown {
                m[i] = true;
                p.values[i] = match self.cfg.grow {
                    Grow::Gradient => 0.0,
                    Grow::Random if std > 0.0 => normal.sample(&mut self.rng) as f32,
                    Grow::Random => 0.0,
                };
            }
            changed.push((p.name.to_string(), k));
        }
        Ok(DstUpdate {
            step,
            drop_fraction: f,
            changed,
        })
    }

    /// Zeroes every inactive weight.
    pub fn apply_masks(&self, params: &mut [Param<'_>]) -> Result<()> {
        self.check(params)?;
        for (p, m) in params.iter_mut().zip(&self.masks) {
            apply_mask(p.values, m)?;
        }
        Ok(())
    }

    /// The masks, in param order.
    pub fn masks(&self) -> &[Mask] {
        &self.masks
    }

    /// The densities of the masks, in param order.
    pub fn densities(&self) -> Vec<f64> {
        self.masks.iter().map(mask_density).collect()
    }
}

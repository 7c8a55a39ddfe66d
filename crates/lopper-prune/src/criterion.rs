//! Criteria: how important each weight is. A [`Criterion`] gives one score per element; a larger
//! score means more important (kept first). Criteria that need several steps of gradients
//! (movement, Taylor, SNIP) accumulate them through [`Criterion::observe`], which a trainer calls
//! after each backward pass.
use crate::param::{ParamRef, matrix_dims};
use crate::{Error, Result};
use lopper_tensor::MatRef;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Scores weights; larger is more important.
pub trait Criterion {
    /// Short name (`magnitude`, `movement`, ...).
    fn name(&self) -> &'static str;
    /// Accumulates whatever the criterion needs from one step (values and gradient).
    /// The default does nothing (magnitude, random, Wanda).
    fn observe(&mut self, _p: ParamRef<'_>) -> Result<()> {
        Ok(())
    }
    /// One score per element of `p`, in row-major order.
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>>;
}

/// `|w|`, NaN counted as largest (as `Csr::from_topk` does).
pub fn abs_key(x: f32) -> f32 {
    if x.is_nan() { f32::INFINITY } else { x.abs() }
}

/// Magnitude: `|w|`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Magnitude;

impl Criterion for Magnitude {
    fn name(&self) -> &'static str {
        "magnitude"
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        Ok(p.values.iter().map(|&x| abs_key(x)).collect())
    }
}

/// Random scores, uniform in [0, 1), reproducible from the seed (the baseline every paper compares
/// against).
#[derive(Clone, Debug)]
pub struct Random {
    rng: StdRng,
}

impl Random {
    /// Random scores from `seed`.
    pub fn new(seed: u64) -> Self {
        Random {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Criterion for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        Ok((0..p.numel()).map(|_| self.rng.random::<f32>()).collect())
    }
}

fn accumulate(
    state: &mut HashMap<String, (Vec<f32>, u64)>,
    p: ParamRef<'_>,
    who: &'static str,
    f: impl Fn(f32, f32) -> f32,
) -> Result<()> {
    p.validate()?;
    let g = p.require_grad(who)?;
    let (acc, count) = state
        .entry(p.name.to_string())
        .or_insert_with(|| (vec![0.0; p.numel()], 0));
    if acc.len() != p.numel() {
        return Err(Error::mismatch(
            who,
            format!(
                "tensor {:?} had {} elements, now {}",
                p.name,
                acc.len(),
                p.numel()
            ),
        ));
    }
    for ((a, &w), &gi) in acc.iter_mut().zip(p.values).zip(g) {
        *a += f(w, gi);
    }
    *count += 1;
    Ok(())
}

/// Movement pruning (Sanh et al. 2020): `S = sum over steps of -w * dL/dw`; weights moving away
/// from zero score high. With no observed step, the current gradient gives one step's worth.
#[derive(Clone, Debug, Default)]
pub struct Movement {
    acc: HashMap<String, (Vec<f32>, u64)>,
}

impl Movement {
    /// A movement criterion with empty accumulators.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Criterion for Movement {
    fn name(&self) -> &'static str {
        "movement"
    }
    fn observe(&mut self, p: ParamRef<'_>) -> Result<()> {
        accumulate(&mut self.acc, p, "movement", |w, g| -w * g)
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        match self.acc.get(p.name) {
            Some((s, _)) if s.len() == p.numel() => Ok(s.clone()),
            _ => {
                let g = p.require_grad("movement")?;
                Ok(p.values.iter().zip(g).map(|(&w, &g)| -w * g).collect())
            }
        }
    }
}

/// First-order Taylor / gradient criterion (Molchanov et al.): the mean over observed steps of
/// `|w * dL/dw|` (the current gradient when nothing was observed).
#[derive(Clone, Debug, Default)]
pub struct Taylor {
    acc: HashMap<String, (Vec<f32>, u64)>,
}

impl Taylor {
    /// A Taylor criterion with empty accumulators.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Criterion for Taylor {
    fn name(&self) -> &'static str {
        "taylor"
    }
    fn observe(&mut self, p: ParamRef<'_>) -> Result<()> {
        accumulate(&mut self.acc, p, "taylor", |w, g| (w * g).abs())
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        match self.acc.get(p.name) {
            Some((s, n)) if s.len() == p.numel() && *n > 0 => {
                Ok(s.iter().map(|x| x / *n as f32).collect())
            }
            _ => {
                let g = p.require_grad("taylor")?;
                Ok(p.values
                    .iter()
                    .zip(g)
                    .map(|(&w, &g)| (w * g).abs())
                    .collect())
            }
        }
    }
}

/// SNIP connection sensitivity at initialization (Lee et al. 2019): `|w * E[dL/dw]|` with the
/// gradient averaged over the observed mini-batches (the current gradient when none was observed).
/// Meant for one-shot pruning before training; the normalization by the global sum in the paper
/// does not change the ranking and is left out.
#[derive(Clone, Debug, Default)]
pub struct Snip {
    grads: HashMap<String, (Vec<f32>, u64)>,
}

impl Snip {
    /// A SNIP criterion with no observed batch.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Criterion for Snip {
    fn name(&self) -> &'static str {
        "snip"
    }
    fn observe(&mut self, p: ParamRef<'_>) -> Result<()> {
        accumulate(&mut self.grads, p, "snip", |_, g| g)
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        let mean: Vec<f32> = match self.grads.get(p.name) {
            Some((s, n)) if s.len() == p.numel() && *n > 0 => {
                s.iter().map(|x| x / *n as f32).collect()
            }
            _ => p.require_grad("snip")?.to_vec(),
        };
        Ok(p.values
            .iter()
            .zip(&mean)
            .map(|(&w, &g)| (w * g).abs())
            .collect())
    }
}

/// Wanda (Sun et al. 2023): `|w_ij| * ||x_j||_2`, where `x_j` is input feature `j` (the last axis
/// of the weight) over the calibration tokens. Norms are set directly or accumulated from
/// activations with [`Wanda::observe_inputs`]. Wanda compares weights within each output row:
/// use it with the `RowBalanced` or N:M granularity to follow the paper.
#[derive(Clone, Debug, Default)]
pub struct Wanda {
    sq: HashMap<String, Vec<f64>>,
}

impl Wanda {
    /// A Wanda criterion without activation statistics.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the input-feature L2 norms of tensor `name` (one per column of its weight).
    pub fn set_input_norms(&mut self, name: &str, norms: &[f32]) {
        self.sq.insert(
            name.to_string(),
            norms.iter().map(|&n| f64::from(n) * f64::from(n)).collect(),
        );
    }
    /// Adds the squared column sums of `x` (`tokens x in_features`, the input of layer `name`).
    pub fn observe_inputs(&mut self, name: &str, x: MatRef<'_>) -> Result<()> {
        let acc = self
            .sq
            .entry(name.to_string())
            .or_insert_with(|| vec![0.0; x.cols()]);
        if acc.len() != x.cols() {
            return Err(Error::mismatch(
                "wanda",
                format!(
                    "inputs of {name:?} had {} features, now {}",
                    acc.len(),
                    x.cols()
                ),
            ));
        }
        for i in 0..x.rows() {
            for (a, &v) in acc.iter_mut().zip(x.row(i)) {
                *a += f64::from(v) * f64::from(v);
            }
        }
        Ok(())
    }
    /// The current input norms of `name`, if any.
    pub fn input_norms(&self, name: &str) -> Option<Vec<f32>> {
        self.sq
            .get(name)
            .map(|v| v.iter().map(|s| s.sqrt() as f32).collect())
    }
}

impl Criterion for Wanda {
    fn name(&self) -> &'static str {
        "wanda"
    }
    fn score(&mut self, p: ParamRef<'_>) -> Result<Vec<f32>> {
        p.validate()?;
        let (_, cols) = matrix_dims(p.shape);
        let norms = self.input_norms(p.name).ok_or_else(|| {
            Error::mismatch(
                "wanda",
                format!("no input activation norms for tensor {:?}", p.name),
            )
        })?;
        if norms.len() != cols {
            return Err(Error::pattern(
                p.name,
                p.shape,
                format!(
                    "wanda has {} input norms, the last axis has {cols}",
                    norms.len()
                ),
            ));
        }
        Ok(p.values
            .iter()
            .enumerate()
            .map(|(i, &w)| abs_key(w) * norms[i % cols.max(1)])
            .collect())
    }
}

/// A criterion by name: `magnitude`, `random` (seeded), `movement`, `taylor`, `snip`; `wanda` needs
/// norms and is built directly.
pub fn by_name(name: &str, seed: u64) -> Result<Box<dyn Criterion>> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "magnitude" => Box::new(Magnitude),
        "random" => Box::new(Random::new(seed)),
        "movement" => Box::new(Movement::new()),
        "taylor" | "gradient" => Box::new(Taylor::new()),
        "snip" => Box::new(Snip::new()),
        other => {
            return Err(Error::invalid(
                "method",
                format!("unknown criterion {other:?} (magnitude, random, movement, taylor, snip)"),
            ));
        }
    })
}

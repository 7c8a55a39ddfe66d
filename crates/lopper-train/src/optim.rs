//! Optimizers. They see parameters as [`ParamMut`] (values, gradient, optional mask) and keep
//! their state per parameter name, so they update exactly the stored values of a Csr or 2:4
//! weight (its pattern stays) and keep a Masked weight's zeros zero.
//!
//! - [`Sgd`]: PyTorch's `torch.optim.SGD` (momentum, dampening, Nesterov, *coupled* weight decay
//!   `g += wd * p`); state `{name}.momentum`.
//! - [`AdamW`]: PyTorch's `torch.optim.AdamW` (decoupled decay `p -= lr * wd * p`, bias correction
//!   with the parameter's own step count `t`, as PyTorch's per-parameter `state['step']`); state
//!   `{name}.m`, `{name}.v` and the scalar `{name}.t`; the scalar `t` counts optimizer steps.
//! - [`clip_grad_norm`]: PyTorch's `clip_grad_norm_` (global 2-norm). Gradients are shared slices
//!   in a [`ParamMut`], so clipping returns the scale and the optimizer applies it:
//!   [`Optimizer::step_scaled`] multiplies each gradient by it first (bit-identical to scaling in
//!   place as PyTorch does).
//!
//! Masks: for a parameter with a `mask`, entries where the mask is false are set to exactly 0 and
//! their state stays 0 (they are skipped). Sparse kinds hand over only their stored values (length
//! nnz): those are updated, nothing else.
//!
//! Layout changes: when a layer changes kind or pattern, whoever changes it calls
//! [`Optimizer::remap`]. A state whose length no longer matches its parameter at `step` is an
//! [`Error::Invalid`](crate::Error::Invalid) naming the parameter (nothing is updated by that
//! step), never a silent reset. A bad `gather` index given to `remap` is reported by the next
//! `step` the same way.
//!
//! Weight decay applies to the parameters the [`DecayFilter`] accepts; [`default_decay`] is the
//! usual PyTorch `no_decay` split (matrices and factors decay; biases and LayerNorms do not).
//!
//! Parallelism: updates are element-wise, so a step that updates at least `par_threshold` values
//! in total runs on the rayon pool, every parameter cut into fixed chunks and all chunks of all
//! parameters in one parallel region; the result is bit-identical to the serial update.
use crate::{Result, invalid};
use lopper_nn::ParamMut;
use lopper_tensor::ops::keep_or_zero;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// An optimizer's state for a checkpoint: named tensors (e.g. `{param}.m`) and scalars
/// (e.g. `t`, the step count).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    /// Named state tensors (`{param}.m`, `{param}.v`, `{param}.momentum`).
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// Named scalars (`t`, `{param}.t`).
    pub scalars: BTreeMap<String, f64>,
}

/// An optimizer.
pub trait Optimizer: Send {
    /// `sgd` or `adamw`.
    fn name(&self) -> &'static str;
    /// One update of every parameter at learning rate `lr`.
    fn step(&mut self, params: &mut [ParamMut<'_>], lr: f32) -> Result<()>;
    /// A parameter's layout changed (its layer switched kind, or its sparsity pattern moved).
    /// With `Some(gather)`: new entry `i` takes the state of old entry `gather[i]`, or zero state
    /// when `None` (a grown connection). With `None`: the parameter's state is dropped.
    fn remap(&mut self, name: &str, gather: Option<&[Option<usize>]>);
    /// The state to save in a checkpoint.
    fn state(&self) -> OptimState;
    /// Restores a state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
    /// One update with every gradient multiplied by `grad_scale` first (the scale of
    /// [`clip_grad_norm`]). The default accepts only `grad_scale == 1` (a plain [`Optimizer::step`])
    /// and refuses any other scale with an error naming the optimizer.
    fn step_scaled(&mut self, params: &mut [ParamMut<'_>], lr: f32, grad_scale: f32) -> Result<()> {
        if grad_scale == 1.0 {
            self.step(params, lr)
        } else {
            Err(invalid(
                self.name(),
                format!("gradient scaling ({grad_scale}) is not supported by this optimizer"),
            ))
        }
    }
}

/// Which parameters get weight decay, by name.
pub type DecayFilter = fn(&str) -> bool;

/// The default [`DecayFilter`]: decay for names ending in `.weight`, `.u`, `.v`, `.lora_a` or
/// `.lora_b` that are not LayerNorm parameters (no `ln_` in the name); so biases and LayerNorms
/// get none (PyTorch's usual `no_decay` groups). Embeddings (`wte.weight`, `wpe.weight`) decay.
pub fn default_decay(name: &str) -> bool {
    let matrix = [".weight", ".u", ".v", ".lora_a", ".lora_b"]
        .iter()
        .any(|s| name.ends_with(s));
    matrix && !name.contains("ln_")
}

/// A [`DecayFilter`] that decays every parameter (PyTorch's default with one parameter group).
pub fn decay_all(_name: &str) -> bool {
    true
}

/// Default `par_threshold`: steps that update at least this many values (all parameters together)
/// run on rayon.
pub const DEFAULT_PAR_THRESHOLD: usize = 1 << 16;
/// Chunk length of the parallel update.
const CHUNK: usize = 1 << 13;

/// The result of [`clip_grad_norm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradClip {
    /// Global 2-norm of all gradients before clipping.
    pub norm: f32,
    /// Factor to multiply every gradient by: `min(1, max_norm / (norm + 1e-6))` (1 when no clip).
    pub scale: f32,
}

/// Global 2-norm of all gradients, accumulated in f64 in a fixed order (8 lanes per parameter,
/// then the lanes, then the parameters): deterministic whatever the thread count.
pub fn grad_norm(params: &[ParamMut<'_>]) -> f64 {
    let sumsq = |g: &[f32]| {
        let mut acc = [0.0f64; 8];
        let chunks = g.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x as f64 * x as f64;
            }
        }
        for (a, &x) in acc.iter_mut().zip(rest) {
            *a += x as f64 * x as f64;
        }
        acc.iter().sum::<f64>()
    };
    // each parameter's sum on one thread, the sums added in order: the same bits on any pool
    let total: usize = params.iter().map(|p| p.grad.len()).sum();
    let sums: Vec<f64> = if total >= DEFAULT_PAR_THRESHOLD && rayon::current_num_threads() > 1 {
        params.par_iter().map(|p| sumsq(p.grad)).collect()
    } else {
        params.iter().map(|p| sumsq(p.grad)).collect()
    };
    sums.iter().sum::<f64>().sqrt()
}

/// PyTorch's `clip_grad_norm_(params, max_norm)`: the global 2-norm of the gradients and the clip
/// factor `max_norm / (norm + 1e-6)` when that is below 1 (else 1). Pass `scale` to
/// [`Optimizer::step_scaled`]. A non-finite norm gives a non-finite scale (as PyTorch without
/// `error_if_nonfinite`); the trainer stops on a non-finite loss before that matters.
pub fn clip_grad_norm(params: &[ParamMut<'_>], max_norm: f32) -> GradClip {
    let norm = grad_norm(params) as f32;
    GradClip {
        norm,
        scale: clip_scale(norm, max_norm),
    }
}

/// The clip factor for a global gradient norm `norm`: `max_norm / (norm + 1e-6)` when that is
/// below 1, else 1 (PyTorch's `clip_grad_norm_`).
pub fn clip_scale(norm: f32, max_norm: f32) -> f32 {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 { coef } else { 1.0 }
}

/// One parameter's update: its values, gradient, mask and state slices (`s0`/`s1` full length or
/// empty, for an optimizer without that state), and the index of its scalars.
struct Job<'a> {
    values: &'a mut [f32],
    grad: &'a [f32],
    mask: Option<&'a [bool]>,
    s0: &'a mut [f32],
    s1: &'a mut [f32],
    scalars: usize,
}

/// Runs `f(values, grad, mask, s0, s1, scalars)` over every job. Updates of at least `threshold`
/// values in total run on rayon in one parallel region: every job cut into `CHUNK`-long pieces,
/// all pieces of all parameters in one pool of tasks (a model's many small parameters, e.g. the
/// stored values of sparse layers, each below any per-parameter threshold, ran on one thread
/// while the others waited). The pieces are the same elementwise updates, so the result is
/// bit-identical to the serial one.
fn run_jobs<S, F>(threshold: usize, jobs: Vec<Job<'_>>, scalars: &[S], f: F)
where
    S: Sync,
    F: Fn(&mut [f32], &[f32], Option<&[bool]>, &mut [f32], &mut [f32], &S) + Sync,
{
    let total: usize = jobs.iter().map(|j| j.values.len()).sum();
    if total < threshold || rayon::current_num_threads() <= 1 {
        for j in jobs {
            f(j.values, j.grad, j.mask, j.s0, j.s1, &scalars[j.scalars]);
        }
        return;
    }
    // a state slice cut like the values (or n empty pieces when the optimizer has none)
    fn pieces(s: &mut [f32], n: usize) -> Vec<&mut [f32]> {
        if s.is_empty() {
            (0..n.div_ceil(CHUNK))
                .map(|_| <&mut [f32]>::default())
                .collect()
        } else {
            s.chunks_mut(CHUNK).collect()
        }
    }
    type Piece<'a> = (
        &'a mut [f32],
        &'a [f32],
        Option<&'a [bool]>,
        &'a mut [f32],
        &'a mut [f32],
        usize,
    );
    let mut all: Vec<Piece<'_>> = Vec::with_capacity(total.div_ceil(CHUNK) + jobs.len());
    for j in jobs {
        let n = j.values.len();
        let masks: Vec<Option<&[bool]>> = match j.mask {
            Some(m) => m.chunks(CHUNK).map(Some).collect(),
            None => vec![None; n.div_ceil(CHUNK)],
        };
        let (e0, e1) = (pieces(j.s0, n), pieces(j.s1, n));
        for ((((v, g), m), a), b) in j
            .values
            .chunks_mut(CHUNK)
            .zip(j.grad.chunks(CHUNK))
            .zip(masks)
            .zip(e0)
            .zip(e1)
        {
            all.push((v, g, m, a, b, j.scalars));
        }
    }
    all.into_par_iter()
        .for_each(|(v, g, m, a, b, k)| f(v, g, m, a, b, &scalars[k]));
}

/// The jobs of `params` (job i uses scalars i) with their state slices `(s0, s1)`, one pair per
/// parameter in order.
fn jobs<'a>(
    params: &'a mut [ParamMut<'_>],
    states: impl IntoIterator<Item = (&'a mut [f32], &'a mut [f32])>,
) -> Vec<Job<'a>> {
    params
        .iter_mut()
        .zip(states)
        .enumerate()
        .map(|(i, (p, (s0, s1)))| Job {
            values: &mut *p.values,
            grad: p.grad,
            mask: p.mask,
            s0,
            s1,
            scalars: i,
        })
        .collect()
}

/// Every parameter's state entry in `map` (created by the caller beforehand), in `params`' order,
/// each borrowed once (names are unique: [`check_unique`]; a missing entry is an error, not a
/// panic).
fn slots_for<'m, T>(
    opt: &str,
    map: &'m mut BTreeMap<String, T>,
    params: &[ParamMut<'_>],
) -> Result<Vec<&'m mut T>> {
    let mut by_name: BTreeMap<&str, &'m mut T> =
        map.iter_mut().map(|(k, v)| (k.as_str(), v)).collect();
    params
        .iter()
        .map(|p| {
            by_name.remove(p.name.as_str()).ok_or_else(|| {
                invalid(
                    format!("{opt}: parameter {}", p.name),
                    "no state for this parameter (or two parameters have this name)",
                )
            })
        })
        .collect()
}

/// Each parameter has its own state, found by name: two parameters with one name are an error
/// (checked before anything is updated).
fn check_unique(opt: &str, params: &[ParamMut<'_>]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for p in params {
        if !seen.insert(p.name.as_str()) {
            return Err(invalid(
                format!("{opt}: parameter {}", p.name),
                "two parameters have this name (each needs its own state)",
            ));
        }
    }
    Ok(())
}

/// Checks a parameter's gradient and mask lengths.
fn check_param(opt: &str, p: &ParamMut<'_>) -> Result<()> {
    if p.grad.len() != p.values.len() {
        return Err(invalid(
            format!("{opt}: parameter {}", p.name),
            format!(
                "gradient has {} entries, values {}",
                p.grad.len(),
                p.values.len()
            ),
        ));
    }
    if let Some(m) = p.mask
        && m.len() != p.values.len()
    {
        return Err(invalid(
            format!("{opt}: parameter {}", p.name),
            format!("mask has {} entries, values {}", m.len(), p.values.len()),
        ));
    }
    Ok(())
}

fn stale(opt: &str, name: &str, state: usize, values: usize) -> crate::Error {
    invalid(
        format!("{opt}: parameter {name}"),
        format!(
            "optimizer state has {state} entries but the parameter has {values}: its layer changed \
             kind or pattern without Optimizer::remap"
        ),
    )
}

/// Gathers `old` through `gather` (None or out-of-range -> 0); the first out-of-range index, if any.
fn gather_vec(old: &[f32], gather: &[Option<usize>]) -> (Vec<f32>, Option<usize>) {
    let mut bad = None;
    let v = gather
        .iter()
        .map(|g| match g {
            Some(j) if *j < old.len() => old[*j],
            Some(j) => {
                bad.get_or_insert(*j);
                0.0
            }
            None => 0.0,
        })
        .collect();
    (v, bad)
}

/// Splits a state key `{name}.{suffix}` for one of `suffixes`.
fn split_key<'a>(key: &'a str, suffixes: &[&'a str]) -> Option<(&'a str, &'a str)> {
    suffixes.iter().find_map(|s| {
        key.strip_suffix(s)
            .and_then(|n| n.strip_suffix('.'))
            .map(|n| (n, *s))
    })
}

fn f64_to_u64(what: &str, key: &str, x: f64) -> Result<u64> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 2f64.powi(53) {
        Ok(x as u64)
    } else {
        Err(invalid(
            format!("{what} state"),
            format!("scalar {key} = {x} is not a step count"),
        ))
    }
}

// ------------------------------------------------------------------------------------------------
// SGD

/// Hyper-parameters of [`Sgd`] (PyTorch names and defaults; the learning rate comes from the
/// schedule at every step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0: plain SGD, no state).
    pub momentum: f32,
    /// Dampening of the momentum (PyTorch: the first step's buffer is the gradient, undamped).
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0, as PyTorch).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`g += wd * p`), for parameters the filter accepts.
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    /// PyTorch's defaults: no momentum, no dampening, no decay.
    fn default() -> Self {
        SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD with momentum, as `torch.optim.SGD`:
/// `g = grad*scale + wd*p; buf = g (first step) or momentum*buf + (1-dampening)*g;
/// g = g + momentum*buf (Nesterov) or buf; p -= lr*g`.
pub struct Sgd {
    cfg: SgdConfig,
    decay: DecayFilter,
    par_threshold: usize,
    t: u64,
    momentum: BTreeMap<String, Vec<f32>>,
    pending: Option<crate::Error>,
}

impl Sgd {
    /// SGD with `cfg` (validated: finite, momentum and dampening in [0, 1), decay >= 0, Nesterov
    /// only with momentum and no dampening).
    pub fn new(cfg: SgdConfig) -> Result<Sgd> {
        let bad = |d: String| Err(invalid("sgd", d));
        let unit = |x: f32| x.is_finite() && (0.0..1.0).contains(&x);
        if !unit(cfg.momentum) || !unit(cfg.dampening) {
            return bad(format!(
                "momentum {} and dampening {} must be in [0, 1)",
                cfg.momentum, cfg.dampening
            ));
        }
        if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
            return bad(format!("weight_decay {} must be >= 0", cfg.weight_decay));
        }
        if cfg.nesterov && (cfg.momentum == 0.0 || cfg.dampening != 0.0) {
            return bad("Nesterov momentum needs momentum > 0 and dampening 0".into());
        }
        Ok(Sgd {
            cfg,
            decay: default_decay,
            par_threshold: DEFAULT_PAR_THRESHOLD,
            t: 0,
            momentum: BTreeMap::new(),
            pending: None,
        })
    }
    /// Which parameters get weight decay (default [`default_decay`]).
    pub fn with_decay_filter(mut self, f: DecayFilter) -> Sgd {
        self.decay = f;
        self
    }
    /// Steps that update at least `n` values (all parameters together) run on rayon (default
    /// [`DEFAULT_PAR_THRESHOLD`]; `usize::MAX`: never).
    pub fn with_par_threshold(mut self, n: usize) -> Sgd {
        self.par_threshold = n.max(1);
        self
    }
    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

/// One SGD update of a chunk. `buf` is empty without momentum.
#[allow(clippy::too_many_arguments)]
fn sgd_chunk(
    p: &mut [f32],
    grad: &[f32],
    mask: Option<&[bool]>,
    buf: &mut [f32],
    cfg: &SgdConfig,
    lr: f32,
    wd: f32,
    scale: f32,
    fresh: bool,
) {
    // one element, the same arithmetic on every path: the gradient with weight decay, then the
    // momentum update (returns the new value and momentum)
    let decayed = |x: f32, g: f32| -> f32 {
        let mut g = g * scale;
        if wd != 0.0 {
            g += wd * x;
        }
        g
    };
    let upd = |x: f32, g: f32, b: f32| -> (f32, f32) {
        let g = decayed(x, g);
        let b = if fresh {
            g
        } else {
            cfg.momentum * b + (1.0 - cfg.dampening) * g
        };
        let g = if cfg.nesterov {
            g + cfg.momentum * b
        } else {
            b
        };
        (x - lr * g, b)
    };
    match (mask, !buf.is_empty()) {
        (None, false) => {
            for (x, &g) in p.iter_mut().zip(grad) {
                *x -= lr * decayed(*x, g);
            }
        }
        (None, true) => {
            for ((x, &g), b) in p.iter_mut().zip(grad).zip(buf.iter_mut()) {
                (*x, *b) = upd(*x, g, *b);
            }
        }
        // masked: the update of every entry, then a bitwise select (keep_or_zero: no branch per
        // entry, so it vectorizes; a branch on a random 80% mask mispredicts about one time in five)
        (Some(mk), false) => {
            for ((x, &g), &keep) in p.iter_mut().zip(grad).zip(mk) {
                let xi = *x - lr * decayed(*x, g);
                *x = keep_or_zero(xi, keep);
            }
        }
        (Some(mk), true) => {
            for (((x, &g), b), &keep) in p.iter_mut().zip(grad).zip(buf.iter_mut()).zip(mk) {
                let (xi, bi) = upd(*x, g, *b);
                *x = keep_or_zero(xi, keep);
                *b = keep_or_zero(bi, keep);
            }
        }
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }
    fn step(&mut self, params: &mut [ParamMut<'_>], lr: f32) -> Result<()> {
        self.step_scaled(params, lr, 1.0)
    }
    fn step_scaled(&mut self, params: &mut [ParamMut<'_>], lr: f32, scale: f32) -> Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        check_unique("sgd", params)?;
        for p in params.iter() {
            check_param("sgd", p)?;
            if let Some(b) = self.momentum.get(&p.name)
                && b.len() != p.values.len()
            {
                return Err(stale("sgd", &p.name, b.len(), p.values.len()));
            }
        }
        let use_mom = self.cfg.momentum != 0.0;
        // per parameter: (weight decay, momentum buffer fresh this step)
        let mut scalars = Vec::with_capacity(params.len());
        for p in params.iter() {
            let wd = if (self.decay)(&p.name) {
                self.cfg.weight_decay
            } else {
                0.0
            };
            let fresh = use_mom && !self.momentum.contains_key(&p.name);
            scalars.push((wd, fresh));
            if fresh {
                // written zeros: the first update reads them (see zeros_written)
                self.momentum.insert(
                    p.name.clone(),
                    lopper_tensor::mem::zeros_written(p.values.len()),
                );
            }
        }
        let bufs: Vec<&mut [f32]> = if use_mom {
            let b = slots_for("sgd", &mut self.momentum, params)?;
            b.into_iter().map(|b| b.as_mut_slice()).collect()
        } else {
            params.iter().map(|_| <&mut [f32]>::default()).collect()
        };
        let jobs = jobs(
            params,
            bufs.into_iter().map(|b| (b, <&mut [f32]>::default())),
        );
        let cfg = self.cfg;
        run_jobs(
            self.par_threshold,
            jobs,
            &scalars,
            |v, g, m, b, _, &(wd, fresh)| sgd_chunk(v, g, m, b, &cfg, lr, wd, scale, fresh),
        );
        self.t += 1;
        Ok(())
    }
    fn remap(&mut self, name: &str, gather: Option<&[Option<usize>]>) {
        match gather {
            None => {
                self.momentum.remove(name);
            }
            Some(g) => {
                if let Some(old) = self.momentum.get(name) {
                    let (v, bad) = gather_vec(old, g);
                    if let Some(j) = bad {
                        self.pending.get_or_insert(invalid(
                            format!("sgd: remap of {name}"),
                            format!("gather index {j} is out of range ({} entries)", old.len()),
                        ));
                    }
                    self.momentum.insert(name.to_string(), v);
                }
            }
        }
    }
    fn state(&self) -> OptimState {
        let mut s = OptimState::default();
        s.scalars.insert("t".into(), self.t as f64);
        for (n, b) in &self.momentum {
            s.tensors.insert(format!("{n}.momentum"), b.clone());
        }
        s
    }
    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut mom = BTreeMap::new();
        for (k, v) in &state.tensors {
            let Some((name, _)) = split_key(k, &["momentum"]) else {
                return Err(invalid("sgd state", format!("unknown tensor {k}")));
            };
            mom.insert(name.to_string(), v.clone());
        }
        for k in state.scalars.keys() {
            if k != "t" {
                return Err(invalid("sgd state", format!("unknown scalar {k}")));
            }
        }
        let t = state
            .scalars
            .get("t")
            .ok_or_else(|| invalid("sgd state", "missing scalar t"))?;
        self.t = f64_to_u64("sgd", "t", *t)?;
        self.momentum = mom;
        self.pending = None;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// AdamW

/// Hyper-parameters of [`AdamW`] (PyTorch names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment (PyTorch `betas[0]`).
    pub beta1: f32,
    /// Decay of the second moment (PyTorch `betas[1]`).
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled decay `p -= lr * wd * p`, for parameters the filter accepts.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One parameter's AdamW state.
#[derive(Clone, Debug, PartialEq)]
struct AdamSlot {
    m: Vec<f32>,
    v: Vec<f32>,
    /// This parameter's own step count (PyTorch's `state['step']`).
    t: u64,
}

/// AdamW, as `torch.optim.AdamW` (single-tensor, `amsgrad=False`), per parameter with step `t`:
/// `p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
/// p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)` (scalars in f64, as Python's).
pub struct AdamW {
    cfg: AdamWConfig,
    decay: DecayFilter,
    par_threshold: usize,
    t: u64,
    slots: BTreeMap<String, AdamSlot>,
    pending: Option<crate::Error>,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW::new(AdamWConfig::default()).expect("the defaults are valid")
    }
}

impl AdamW {
    /// AdamW with `cfg` (validated: betas in [0, 1), eps > 0, decay >= 0, all finite).
    pub fn new(cfg: AdamWConfig) -> Result<AdamW> {
        let unit = |x: f32| x.is_finite() && (0.0..1.0).contains(&x);
        if !unit(cfg.beta1) || !unit(cfg.beta2) {
            return Err(invalid(
                "adamw",
                format!("betas ({}, {}) must be in [0, 1)", cfg.beta1, cfg.beta2),
            ));
        }
        if !(cfg.eps.is_finite() && cfg.eps > 0.0) {
            return Err(invalid("adamw", format!("eps {} must be > 0", cfg.eps)));
        }
        if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
            return Err(invalid(
                "adamw",
                format!("weight_decay {} must be >= 0", cfg.weight_decay),
            ));
        }
        Ok(AdamW {
            cfg,
            decay: default_decay,
            par_threshold: DEFAULT_PAR_THRESHOLD,
            t: 0,
            slots: BTreeMap::new(),
            pending: None,
        })
    }
    /// Which parameters get weight decay (default [`default_decay`]).
    pub fn with_decay_filter(mut self, f: DecayFilter) -> AdamW {
        self.decay = f;
        self
    }
    /// Steps that update at least `n` values (all parameters together) run on rayon (default
    /// [`DEFAULT_PAR_THRESHOLD`]; `usize::MAX`: never).
    pub fn with_par_threshold(mut self, n: usize) -> AdamW {
        self.par_threshold = n.max(1);
        self
    }
    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

/// Per-step AdamW scalars (computed in f64, used in f32 as PyTorch does).
#[derive(Clone, Copy)]
struct AdamScalars {
    decay: f32,
    b1: f32,
    b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    scale: f32,
}

fn adam_chunk(
    p: &mut [f32],
    grad: &[f32],
    mask: Option<&[bool]>,
    m: &mut [f32],
    v: &mut [f32],
    s: &AdamScalars,
) {
    // one element: the same arithmetic on both paths
    let upd = |x: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
        let g = g * s.scale;
        let mi = s.b1 * *m + (1.0 - s.b1) * g;
        let vi = s.b2 * *v + (1.0 - s.b2) * g * g;
        *m = mi;
        *v = vi;
        *x = *x * s.decay - s.step_size * (mi / (vi.sqrt() / s.bc2_sqrt + s.eps));
    };
    match mask {
        // the common case as a plain zip, so that it vectorizes
        None => {
            for (((x, &g), m), v) in p.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
                upd(x, g, m, v);
            }
        }
        // masked: the update of every entry, then a bitwise select (keep_or_zero: no branch per
        // entry, so it vectorizes like the plain case; `if keep { .. } else { 0.0 }` compiled to a
        // scalar loop with a branch, which mispredicts one time in five on a random 80% mask)
        Some(mk) => {
            let it = p.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut());
            for ((((x, &g), m), v), &keep) in it.zip(mk) {
                let (mut xi, mut mi, mut vi) = (*x, *m, *v);
                upd(&mut xi, g, &mut mi, &mut vi);
                *x = keep_or_zero(xi, keep);
                *m = keep_or_zero(mi, keep);
                *v = keep_or_zero(vi, keep);
            }
        }
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn step(&mut self, params: &mut [ParamMut<'_>], lr: f32) -> Result<()> {
        self.step_scaled(params, lr, 1.0)
    }
    fn step_scaled(&mut self, params: &mut [ParamMut<'_>], lr: f32, scale: f32) -> Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        check_unique("adamw", params)?;
        for p in params.iter() {
            check_param("adamw", p)?;
            if let Some(s) = self.slots.get(&p.name)
                && s.m.len() != p.values.len()
            {
                return Err(stale("adamw", &p.name, s.m.len(), p.values.len()));
            }
        }
        let c = self.cfg;
        let mut scalars = Vec::with_capacity(params.len());
        for p in params.iter() {
            let n = p.values.len();
            let slot = self
                .slots
                .entry(p.name.clone())
                .or_insert_with(|| AdamSlot {
                    // written zeros: the first update reads them (see zeros_written)
                    m: lopper_tensor::mem::zeros_written(n),
                    v: lopper_tensor::mem::zeros_written(n),
                    t: 0,
                });
            slot.t += 1;
            let t = slot.t as i32;
            let wd = if (self.decay)(&p.name) {
                c.weight_decay
            } else {
                0.0
            };
            let bc1 = 1.0 - (c.beta1 as f64).powi(t);
            let bc2 = 1.0 - (c.beta2 as f64).powi(t);
            scalars.push(AdamScalars {
                decay: (1.0 - lr as f64 * wd as f64) as f32,
                b1: c.beta1,
                b2: c.beta2,
                step_size: (lr as f64 / bc1) as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                eps: c.eps,
                scale,
            });
        }
        let slots = slots_for("adamw", &mut self.slots, params)?;
        let jobs = jobs(
            params,
            slots
                .into_iter()
                .map(|s| (s.m.as_mut_slice(), s.v.as_mut_slice())),
        );
        run_jobs(self.par_threshold, jobs, &scalars, |x, g, mk, m, v, s| {
            adam_chunk(x, g, mk, m, v, s)
        });
        self.t += 1;
        Ok(())
    }
    fn remap(&mut self, name: &str, gather: Option<&[Option<usize>]>) {
        match gather {
            None => {
                self.slots.remove(name);
            }
            Some(g) => {
                if let Some(old) = self.slots.get_mut(name) {
                    let (m, bad) = gather_vec(&old.m, g);
                    let (v, _) = gather_vec(&old.v, g);
                    if let Some(j) = bad {
                        self.pending.get_or_insert(invalid(
                            format!("adamw: remap of {name}"),
                            format!("gather index {j} is out of range ({} entries)", old.m.len()),
                        ));
                    }
                    old.m = m;
                    old.v = v;
                }
            }
        }
    }
    fn state(&self) -> OptimState {
        let mut s = OptimState::default();
        s.scalars.insert("t".into(), self.t as f64);
        for (n, slot) in &self.slots {
            s.tensors.insert(format!("{n}.m"), slot.m.clone());
            s.tensors.insert(format!("{n}.v"), slot.v.clone());
            s.scalars.insert(format!("{n}.t"), slot.t as f64);
        }
        s
    }
    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots: BTreeMap<String, AdamSlot> = BTreeMap::new();
        let mut t = None;
        for (k, x) in &state.scalars {
            if k == "t" {
                t = Some(f64_to_u64("adamw", k, *x)?);
                continue;
            }
            let Some((name, _)) = split_key(k, &["t"]) else {
                return Err(invalid("adamw state", format!("unknown scalar {k}")));
            };
            let m = state.tensors.get(&format!("{name}.m"));
            let v = state.tensors.get(&format!("{name}.v"));
            let (Some(m), Some(v)) = (m, v) else {
                return Err(invalid(
                    "adamw state",
                    format!("parameter {name}: step count without both {name}.m and {name}.v"),
                ));
            };
            if m.len() != v.len() {
                return Err(invalid(
                    "adamw state",
                    format!("parameter {name}: m has {} entries, v {}", m.len(), v.len()),
                ));
            }
            slots.insert(
                name.to_string(),
                AdamSlot {
                    m: m.clone(),
                    v: v.clone(),
                    t: f64_to_u64("adamw", k, *x)?,
                },
            );
        }
        for k in state.tensors.keys() {
            match split_key(k, &["m", "v"]) {
                Some((name, _)) if slots.contains_key(name) => {}
                _ => {
                    return Err(invalid(
                        "adamw state",
                        format!("tensor {k} has no matching {{param}}.t scalar"),
                    ));
                }
            }
        }
        self.t = t.ok_or_else(|| invalid("adamw state", "missing scalar t"))?;
        self.slots = slots;
        self.pending = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_decay_split() {
        for n in [
            "h.0.attn.qkv.weight",
            "fc.0.u",
            "fc.0.v",
            "x.lora_a",
            "x.lora_b",
            "wte.weight",
        ] {
            assert!(default_decay(n), "{n}");
        }
        for n in [
            "h.0.attn.qkv.bias",
            "h.0.ln_1.weight",
            "ln_f.weight",
            "ln_f.bias",
            "fc.1.bias",
        ] {
            assert!(!default_decay(n), "{n}");
        }
    }

    #[test]
    fn split_keys() {
        assert_eq!(split_key("a.b.m", &["m", "v"]), Some(("a.b", "m")));
        assert_eq!(split_key("a.b.momentum", &["m"]), None);
        assert_eq!(split_key("m", &["m"]), None);
    }

    #[test]
    fn parallel_chunks_equal_serial() {
        // several parameters of awkward lengths (one longer than a chunk, one empty, small ones),
        // masked and not: every piece of every parameter in one parallel region must give the
        // serial bits, for AdamW and SGD with and without momentum
        let lens = [3 * CHUNK + 17, 5, 0, CHUNK, 1000];
        let data = |n: usize, k: usize| -> (Vec<f32>, Vec<f32>, Vec<bool>) {
            let g = (0..n)
                .map(|i| (((i + k) * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let w = (0..n)
                .map(|i| (((i + 3 * k) * 31) % 97) as f32 / 97.0)
                .collect();
            let m = (0..n).map(|i| !(i + k).is_multiple_of(3)).collect();
            (g, w, m)
        };
        let sets: Vec<_> = lens.iter().enumerate().map(|(k, &n)| data(n, k)).collect();
        let run = |opt: &mut dyn Optimizer, thr_pool: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(thr_pool)
                .build()
                .unwrap();
            let mut ws: Vec<Vec<f32>> = sets.iter().map(|(_, w, _)| w.clone()).collect();
            pool.install(|| {
                for _ in 0..3 {
                    let mut ps: Vec<ParamMut<'_>> = ws
                        .iter_mut()
                        .zip(&sets)
                        .enumerate()
                        .map(|(k, (w, (g, _, m)))| ParamMut {
                            name: format!("l{k}.weight"),
                            values: w,
                            grad: g,
                            mask: (k % 2 == 0).then_some(m.as_slice()),
                        })
                        .collect();
                    opt.step_scaled(&mut ps, 1e-2, 0.75).unwrap();
                }
            });
            (ws, opt.state())
        };
        let sgd = |mom: f32| SgdConfig {
            momentum: mom,
            weight_decay: 0.01,
            ..SgdConfig::default()
        };
        type Make = Box<dyn Fn(usize) -> Box<dyn Optimizer>>;
        let makers: [(&str, Make); 3] = [
            (
                "adamw",
                Box::new(|t| Box::new(AdamW::default().with_par_threshold(t))),
            ),
            (
                "sgd",
                Box::new(move |t| Box::new(Sgd::new(sgd(0.0)).unwrap().with_par_threshold(t))),
            ),
            (
                "sgd+momentum",
                Box::new(move |t| Box::new(Sgd::new(sgd(0.9)).unwrap().with_par_threshold(t))),
            ),
        ];
        for (name, make) in &makers {
            let (a, sa) = run(make(usize::MAX).as_mut(), 1);
            let (b, sb) = run(make(1).as_mut(), 3);
            assert_eq!(a, b, "{name}");
            assert_eq!(sa, sb, "{name}");
            assert_ne!(a[0], sets[0].1, "{name}: the update changed nothing");
        }
    }

    #[test]
    fn grad_norm_has_the_same_bits_on_any_pool() {
        // above the parallel threshold in total, in parameters of several lengths
        let grads: Vec<Vec<f32>> = [DEFAULT_PAR_THRESHOLD, 3, 0, 40_001]
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                (0..n)
                    .map(|i| ((i * 37 + k) % 101) as f32 / 9.0 - 5.0)
                    .collect()
            })
            .collect();
        let mut vals: Vec<Vec<f32>> = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        let ps: Vec<ParamMut<'_>> = vals
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(k, (v, g))| ParamMut {
                name: format!("p{k}"),
                values: v,
                grad: g,
                mask: None,
            })
            .collect();
        let exact: f64 = grads
            .iter()
            .flatten()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        let on = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            pool.install(|| grad_norm(&ps))
        };
        let one = on(1);
        assert_eq!(one.to_bits(), on(3).to_bits());
        assert!((one - exact).abs() <= 1e-12 * exact, "{one} vs {exact}");
    }

    #[test]
    fn two_parameters_with_one_name_are_an_error_before_any_update() {
        let (mut w1, mut w2) = (vec![1.0f32; 4], vec![2.0f32; 4]);
        let g = vec![0.5f32; 4];
        let mut opts: Vec<Box<dyn Optimizer>> = vec![
            Box::new(AdamW::default()),
            Box::new(
                Sgd::new(SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::default()
                })
                .unwrap(),
            ),
        ];
        for o in opts.iter_mut() {
            let before = o.state();
            let mut ps = vec![
                ParamMut {
                    name: "x.weight".into(),
                    values: &mut w1,
                    grad: &g,
                    mask: None,
                },
                ParamMut {
                    name: "x.weight".into(),
                    values: &mut w2,
                    grad: &g,
                    mask: None,
                },
            ];
            let e = o.step(&mut ps, 0.1).unwrap_err().to_string();
            assert!(
                e.contains("x.weight") && e.contains("two parameters"),
                "{e}"
            );
            assert_eq!(o.state(), before, "{}", o.name());
        }
        assert_eq!((w1, w2), (vec![1.0; 4], vec![2.0; 4]));
    }
}

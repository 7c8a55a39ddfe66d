//! One-time conversions of the selected layers at a step: 2:4, low-rank, LoRA.
use super::{LayerScope, current_mask, layer_mut, mask_from_f32, mask_to_f32, replace_weight};
use crate::callback::{Callback, CallbackState, Ctx};
use crate::{Result, invalid};
use lopper_lowrank::{Precision, RankRule, select_rank, svd};
use lopper_nn::{Linear, Weight, WeightKind};
use lopper_tensor::{MatRef, Par};
use std::collections::BTreeMap;

/// Shared part of the conversion stages: when, which layers, and whether it already ran.
struct OneTime {
    name: String,
    at: u64,
    scope: LayerScope,
    /// The step it ran at (checkpoint state).
    done: Option<u64>,
    restored: bool,
}

impl OneTime {
    fn new(name: &str, at: u64, scope: LayerScope) -> Self {
        OneTime {
            name: name.to_string(),
            at,
            scope,
            done: None,
            restored: false,
        }
    }
    /// Checks `at` against the run and the selection; returns the selected layers.
    fn begin(&self, ctx: &mut Ctx<'_>) -> Result<Vec<String>> {
        if self.at >= ctx.total_steps {
            return Err(invalid(
                &self.name,
                format!(
                    "at {} is not a step of this {}-step run",
                    self.at, ctx.total_steps
                ),
            ));
        }
        self.scope.select(ctx.model, &self.name)
    }
    fn due(&self, step: u64) -> bool {
        step == self.at && self.done.is_none()
    }
    fn state(&self) -> CallbackState {
        CallbackState {
            tensors: Default::default(),
            json: serde_json::json!({ "done": self.done }),
        }
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        self.done = match state.json.get("done") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid(&self.name, format!("checkpoint step {v} is not a step"))
            })?),
        };
        self.restored = true;
        Ok(())
    }
    /// Converts every selected layer with `kind_of` (per layer), remapping optimizer state, and
    /// logs one event per layer plus a summary.
    fn run(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut kind_of: impl FnMut(&Linear) -> Result<WeightKind>,
    ) -> Result<()> {
        let t = ctx.step;
        let layers = self.scope.select(ctx.model, &self.name)?;
        for name in &layers {
            let l = layer_mut(ctx.model, name, &self.name)?;
            let kind = kind_of(l)?;
            let before = l.weight().stored(l.out_features(), l.in_features());
            let old = replace_weight(ctx.model, ctx.optimizer, name, &self.name, |l| {
                Ok(l.weight()
                    .convert(&kind, l.out_features(), l.in_features(), &l.name)?)
            })?;
            let l = layer_mut(ctx.model, name, &self.name)?;
            let after = l.weight().stored(l.out_features(), l.in_features());
            ctx.log.event(
                t,
                &self.name,
                format!(
                    "step {t}: {name} {old} -> {} ({before} -> {after} stored weights)",
                    describe(&kind)
                ),
            );
        }
        self.done = Some(t);
        Ok(())
    }
    /// After a resume of a run where the conversion already happened: converts again (same kind,
    /// no remap; the checkpoint's values and optimizer state are loaded afterwards).
    fn restore(
        &self,
        ctx: &mut Ctx<'_>,
        mut kind_of: impl FnMut(&Linear) -> Result<WeightKind>,
    ) -> Result<()> {
        if !(self.restored && self.done.is_some()) {
            return Ok(());
        }
        for name in self.scope.select(ctx.model, &self.name)? {
            let l = layer_mut(ctx.model, &name, &self.name)?;
            let kind = kind_of(l)?;
            if l.weight().kind_name() == kind_name(&kind) {
                continue; // already restored (the checkpoint loader restores kinds and factors)
            }
            l.set_kind(&kind)?;
        }
        Ok(())
    }
}

/// The [`lopper_nn::Weight::kind_name`] a conversion to `kind` produces.
fn kind_name(kind: &WeightKind) -> &'static str {
    match kind {
        WeightKind::Dense => "dense",
        WeightKind::Masked(_) => "masked",
        WeightKind::Csr | WeightKind::CsrMask(_) => "csr",
        WeightKind::Sparse24 => "sparse24",
        WeightKind::LowRank { .. } => "lowrank",
        WeightKind::Lora { .. } => "lora",
    }
}

fn describe(kind: &WeightKind) -> String {
    match kind {
        WeightKind::Sparse24 => "sparse24".into(),
        WeightKind::LowRank { rank } => format!("lowrank (rank {rank})"),
        WeightKind::Lora {
            rank, sparse_base, ..
        } => format!(
            "lora (rank {rank}, {} base)",
            if *sparse_base { "csr" } else { "dense" }
        ),
        k => format!("{k:?}"),
    }
}

/// At step `at`, every selected layer becomes 2:4 by magnitude along K (two kept per group of four
/// input columns; K must be a multiple of 4). Optimizer state follows the kept entries.
pub struct ToSparse24 {
    one: OneTime,
    /// The 2:4 patterns chosen (checkpoint state).
    masks: BTreeMap<String, Vec<bool>>,
}

impl ToSparse24 {
    /// The stage (errors at `on_begin` name `sparse24`).
    pub fn new(at: u64, scope: LayerScope) -> Self {
        ToSparse24 {
            one: OneTime::new("sparse24", at, scope),
            masks: BTreeMap::new(),
        }
    }
    /// Renames the stage.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.one.name = name.into();
        self
    }
}

impl Callback for ToSparse24 {
    fn name(&self) -> String {
        self.one.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        for name in self.one.begin(ctx)? {
            let l = layer_mut(ctx.model, &name, &self.one.name)?;
            if !l.in_features().is_multiple_of(4) {
                return Err(invalid(
                    &self.one.name,
                    format!(
                        "layer {name} has K = {} input features, not a multiple of 4 (exclude it)",
                        l.in_features()
                    ),
                ));
            }
        }
        if !(self.one.restored && self.one.done.is_some()) {
            return Ok(());
        }
        // the saved 2:4 patterns (the values come from the checkpoint afterwards)
        for (name, mask) in &self.masks {
            let l = layer_mut(ctx.model, name, &self.one.name)?;
            let (m, k) = (l.out_features(), l.in_features());
            if l.weight().kind_name() == "sparse24"
                && current_mask(l.weight(), m, k).as_ref() == Some(mask)
            {
                continue; // already restored (the checkpoint loader restores kinds and patterns)
            }
            if mask.len() != m * k {
                return Err(invalid(
                    &self.one.name,
                    format!("checkpoint mask of {name} does not fit {m}x{k}"),
                ));
            }
            let vals: Vec<f32> = l
                .dense_weight()
                .iter()
                .zip(mask)
                .map(|(&x, &keep)| match (keep, x == 0.0) {
                    (false, _) => 0.0,
                    (true, true) => f32::MIN_POSITIVE, // a kept zero must stay the kept one
                    (true, false) => x,
                })
                .collect();
            let w = Weight::dense(vals).convert(&WeightKind::Sparse24, m, k, name)?;
            l.set_weight(w)?;
        }
        Ok(())
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.one.due(ctx.step) {
            self.one.run(ctx, |_| Ok(WeightKind::Sparse24))?;
            for name in self.one.scope.select(ctx.model, &self.one.name)? {
                let l = layer_mut(ctx.model, &name, &self.one.name)?;
                let mask = current_mask(l.weight(), l.out_features(), l.in_features())
                    .ok_or_else(|| invalid(&self.one.name, format!("{name} has no pattern")))?;
                self.masks.insert(name, mask);
            }
        }
        Ok(())
    }
    fn state(&self) -> CallbackState {
        let mut s = self.one.state();
        s.tensors = self
            .masks
            .iter()
            .map(|(n, m)| (format!("mask.{n}"), mask_to_f32(m)))
            .collect();
        s
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        self.one.load_state(state)?;
        self.masks.clear();
        for (key, v) in &state.tensors {
            let name = key.strip_prefix("mask.").ok_or_else(|| {
                invalid(
                    &self.one.name,
                    format!("unexpected tensor {key:?} in checkpoint state"),
                )
            })?;
            self.masks
                .insert(name.to_string(), mask_from_f32(v, &self.one.name)?);
        }
        Ok(())
    }
}

/// How [`ToLowRank`] picks each layer's rank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LowRankRule {
    /// This rank (clamped to min(M, K)).
    Rank(usize),
    /// The smallest rank keeping this fraction of the squared Frobenius norm, in (0, 1].
    Energy(f64),
}

/// At step `at`, every selected layer becomes `U V` by truncated SVD at a fixed rank or the rank
/// that keeps an energy fraction. The `.weight` optimizer state is dropped; U and V start fresh.
pub struct ToLowRank {
    one: OneTime,
    rule: LowRankRule,
    /// Ranks chosen at conversion (layer order), reused on resume.
    ranks: Vec<usize>,
}

impl ToLowRank {
    /// A validated stage; errors name `lowrank`.
    pub fn new(at: u64, rule: LowRankRule, scope: LayerScope) -> Result<Self> {
        match rule {
            LowRankRule::Rank(0) => return Err(invalid("lowrank", "rank must be at least 1")),
            LowRankRule::Energy(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(invalid("lowrank", format!("energy {f} is outside (0, 1]")));
            }
            _ => {}
        }
        Ok(ToLowRank {
            one: OneTime::new("lowrank", at, scope),
            rule,
            ranks: Vec::new(),
        })
    }
    /// Renames the stage.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.one.name = name.into();
        self
    }
}

/// The rank of `l` under `rule` (an SVD of the dense weight for the energy rule).
fn rank_of(l: &Linear, rule: LowRankRule, stage: &str) -> Result<usize> {
    let (m, k) = (l.out_features(), l.in_features());
    match rule {
        LowRankRule::Rank(r) => Ok(r.clamp(1, m.min(k))),
        LowRankRule::Energy(f) => {
            let w = l.dense_weight();
            let s = svd(MatRef::new(&w, m, k)?, Precision::F64, Par::Seq)
                .map_err(|e| invalid(stage, format!("layer {}: {e}", l.name)))?;
            let total: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            select_rank(&s.s, total, m, k, RankRule::Energy(f))
                .map_err(|e| invalid(stage, format!("layer {}: {e}", l.name)))
        }
    }
}

impl Callback for ToLowRank {
    fn name(&self) -> String {
        self.one.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.one.begin(ctx)?;
        let ranks = self.ranks.clone();
        let mut i = 0;
        let stage = self.one.name.clone();
        self.one.restore(ctx, |_| {
            let r = *ranks.get(i).ok_or_else(|| {
                invalid(&stage, "checkpoint has fewer ranks than selected layers")
            })?;
            i += 1;
            Ok(WeightKind::LowRank { rank: r })
        })
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.one.due(ctx.step) {
            let (rule, stage) = (self.rule, self.one.name.clone());
            let mut ranks = Vec::new();
            self.one.run(ctx, |l| {
                let rank = rank_of(l, rule, &stage)?;
                ranks.push(rank);
                Ok(WeightKind::LowRank { rank })
            })?;
            self.ranks = ranks;
        }
        Ok(())
    }
    fn state(&self) -> CallbackState {
        let mut s = self.one.state();
        s.json["ranks"] = serde_json::json!(self.ranks);
        s
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        self.one.load_state(state)?;
        self.ranks = match state.json.get("ranks") {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| invalid(&self.one.name, format!("checkpoint ranks {v}: {e}")))?,
        };
        Ok(())
    }
}

/// At step `at`, every selected layer freezes its weight as a base (Csr keeping its non-zeros when
/// `sparse_base`, else dense) and trains a rank-`rank` adapter `(alpha / rank) B A` (B = 0, so the
/// function is unchanged). The `.weight` optimizer state is dropped; A and B start fresh.
pub struct ToLora {
    one: OneTime,
    rank: usize,
    alpha: f32,
    sparse_base: bool,
    seed: u64,
}

impl ToLora {
    /// A validated stage; errors name `lora`.
    pub fn new(
        at: u64,
        rank: usize,
        alpha: f32,
        sparse_base: bool,
        seed: u64,
        scope: LayerScope,
    ) -> Result<Self> {
        if rank == 0 {
            return Err(invalid("lora", "rank must be at least 1"));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(invalid("lora", format!("alpha {alpha} must be > 0")));
        }
        Ok(ToLora {
            one: OneTime::new("lora", at, scope),
            rank,
            alpha,
            sparse_base,
            seed,
        })
    }
    /// Renames the stage.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.one.name = name.into();
        self
    }
    fn kind(&self, i: u64) -> WeightKind {
        WeightKind::Lora {
            rank: self.rank,
            alpha: self.alpha,
            sparse_base: self.sparse_base,
            seed: self.seed.wrapping_mul(1000).wrapping_add(i),
        }
    }
}

impl Callback for ToLora {
    fn name(&self) -> String {
        self.one.name.clone()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        for name in self.one.begin(ctx)? {
            let l = layer_mut(ctx.model, &name, &self.one.name)?;
            let p = l.out_features().min(l.in_features());
            if self.rank > p {
                return Err(invalid(
                    &self.one.name,
                    format!("rank {} exceeds min(M, K) = {p} of layer {name}", self.rank),
                ));
            }
        }
        let mut i = 0;
        let kinds: Vec<WeightKind> = (0..ctx.model.linears().len() as u64)
            .map(|j| self.kind(j))
            .collect();
        self.one.restore(ctx, |_| {
            i += 1;
            Ok(kinds[i - 1].clone())
        })
    }
    fn before_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.one.due(ctx.step) {
            let kinds: Vec<WeightKind> = (0..ctx.model.linears().len() as u64)
                .map(|j| self.kind(j))
                .collect();
            let mut i = 0;
            self.one.run(ctx, |_| {
                i += 1;
                Ok(kinds[i - 1].clone())
            })?;
        }
        Ok(())
    }
    fn state(&self) -> CallbackState {
        self.one.state()
    }
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        self.one.load_state(state)
    }
}

//! The recipe's tables as typed data (serde, unknown keys refused) and their semantic checks.
//! Every key is optional to serde (so that a missing key is reported by the checks with its
//! table's line); the checks say which keys each `kind` takes and needs. docs/recipes.md has the
//! schema.
use super::spans::{Seg, Spans, path_string};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The whole recipe file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeSpec {
    /// Name of the run (reports, checkpoint directory).
    pub name: String,
    /// Seed of the model's initialization, the data order and the stages' draws (default 0).
    pub seed: u64,
    /// `[model]`.
    pub model: ModelSpec,
    /// `[data]`.
    pub data: DataSpec,
    /// `[optimizer]`.
    pub optimizer: OptimizerSpec,
    /// `[schedule]` (default: constant).
    pub schedule: ScheduleSpec,
    /// `[train]`.
    pub train: TrainSpec,
    /// `[[stage]]`, in order.
    pub stage: Vec<StageSpec>,
}

/// `[model]`: `kind = "gpt"` (vocab, ctx, layers, heads, width, tie_weights) or `"mlp"` (sizes,
/// activation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// `gpt` or `mlp`.
    pub kind: String,
    /// GPT vocabulary (default 256, at least 256).
    pub vocab: Option<usize>,
    /// GPT maximum context (required for gpt).
    pub ctx: Option<usize>,
    /// GPT blocks (required for gpt).
    pub layers: Option<usize>,
    /// GPT attention heads (required for gpt).
    pub heads: Option<usize>,
    /// GPT width, a multiple of `heads` (required for gpt).
    pub width: Option<usize>,
    /// GPT head tied to the token embedding (default true).
    pub tie_weights: Option<bool>,
    /// MLP `[input, hidden..., classes]` (required for mlp).
    pub sizes: Option<Vec<usize>>,
    /// MLP activation: `relu` (default) or `gelu`.
    pub activation: Option<String>,
    /// Storage precision of weights and saved activations: `f32` (default) or `bf16` (mixed
    /// precision: bf16 storage, f32 accumulation and f32 master weights).
    pub precision: Option<String>,
}

/// `[data]`: `kind = "text"` (path), `"digits"` (path), `"idx"` (dir), `"fashion-mnist"` (dir);
/// batch, context (text), val_fraction, val_batches (text).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    /// `text`, `digits`, `idx` or `fashion-mnist`.
    pub kind: String,
    /// Text or digits CSV file (default: the embedded data).
    pub path: Option<String>,
    /// IDX directory (required for idx; Debian's path for fashion-mnist).
    pub dir: Option<String>,
    /// Rows per training batch (default 8 for text, 64 for images).
    pub batch: Option<usize>,
    /// Tokens per row (text; default the model's ctx).
    pub context: Option<usize>,
    /// Held-out fraction (text 0.1, digits 0.2).
    pub val_fraction: Option<f64>,
    /// Validation batches (text; default 8).
    pub val_batches: Option<usize>,
}

/// `[optimizer]`: `kind = "adamw"` (lr, betas, eps, weight_decay) or `"sgd"` (lr, momentum,
/// dampening, nesterov, weight_decay).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `adamw` or `sgd`.
    pub kind: String,
    /// Base learning rate (required).
    pub lr: Option<f32>,
    /// AdamW betas (default [0.9, 0.999]).
    #[serde(deserialize_with = "two_floats")]
    pub betas: Option<[f32; 2]>,
    /// AdamW epsilon (default 1e-8).
    pub eps: Option<f32>,
    /// Decoupled (AdamW, default 0.01) or L2 (SGD, default 0) weight decay.
    pub weight_decay: Option<f32>,
    /// SGD momentum (default 0).
    pub momentum: Option<f32>,
    /// SGD dampening (default 0).
    pub dampening: Option<f32>,
    /// SGD Nesterov momentum (default false).
    pub nesterov: Option<bool>,
}

/// `betas`: exactly two numbers (toml fills a fixed-size array from the first elements of a longer
/// one and ignores the rest, so `[0.9, 0.95, 0.999]` would pass unnoticed).
fn two_floats<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<[f32; 2]>, D::Error> {
    let v = Vec::<f32>::deserialize(d)?;
    match v[..] {
        [a, b] => Ok(Some([a, b])),
        _ => Err(serde::de::Error::invalid_length(
            v.len(),
            &"an array of length 2",
        )),
    }
}

/// `[schedule]`: `kind = "constant"`, `"cosine"` or `"linear"` (warmup, min_lr).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `constant` (default), `cosine` or `linear`.
    pub kind: String,
    /// Linear warmup steps (cosine, linear; default 0).
    pub warmup: Option<u64>,
    /// Final learning rate (cosine, linear; default 0).
    pub min_lr: Option<f32>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            kind: "constant".into(),
            warmup: None,
            min_lr: None,
        }
    }
}

/// `[train]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// Optimizer steps (required).
    pub steps: Option<u64>,
    /// Evaluate every this many steps (default 100; 0: at the end only).
    pub eval_every: Option<u64>,
    /// Log the training loss every this many steps (default 10).
    pub log_every: Option<u64>,
    /// Clip gradients to this global 2-norm.
    pub grad_clip: Option<f32>,
    /// Evaluations without improvement before stopping (adds EarlyStopping).
    pub early_stopping_patience: Option<u64>,
    /// Smallest improvement that counts (default 0).
    pub early_stopping_min_delta: Option<f64>,
    /// Save a checkpoint every this many steps (adds Checkpointing).
    pub checkpoint_every: Option<u64>,
    /// Checkpoint directory (default `checkpoints/{name}`).
    pub checkpoint_dir: Option<String>,
    /// Checkpoints kept (default 2).
    pub checkpoint_keep: Option<usize>,
}

/// RigL's `end`: a step (integer) or a fraction of the run (float).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndSpec {
    /// A step.
    Step(u64),
    /// A fraction of `train.steps`.
    Fraction(f64),
}

/// `[[stage]]`: `kind` and the keys of that kind (see docs/recipes.md); `include` / `exclude`
/// regexes on layer names for every kind; `name` to tell two stages of one kind apart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageSpec {
    /// One of [`STAGE_KINDS`].
    pub kind: String,
    /// Callback name (default: the kind, or `{kind}.{index}` when taken).
    pub name: Option<String>,
    /// Regex on layer names: only these layers.
    pub include: Option<String>,
    /// Regex on layer names: not these layers.
    pub exclude: Option<String>,
    /// Target sparsity in [0, 1) (gradual_magnitude, masked_magnitude, rigl).
    pub sparsity: Option<f64>,
    /// First pruning step (gradual_magnitude; default 0).
    pub start: Option<u64>,
    /// Last pruning step (gradual_magnitude) or last update (rigl: step or fraction).
    pub end: Option<EndSpec>,
    /// Steps between pruning steps (gradual_magnitude; default 1).
    pub every: Option<u64>,
    /// Sparsity at `start` (gradual_magnitude; default 0).
    pub initial: Option<f64>,
    /// Polynomial exponent (gradual_magnitude; default 3).
    pub exponent: Option<f64>,
    /// Sparsity from which a layer runs as Csr (gradual_magnitude; default 0.7).
    pub switch_to_csr_at: Option<f64>,
    /// The step of a one-time stage.
    pub at: Option<u64>,
    /// Rank (lowrank, lora).
    pub rank: Option<usize>,
    /// Energy fraction in (0, 1] choosing the rank (lowrank).
    pub energy: Option<f64>,
    /// LoRA scale numerator (default: the rank).
    pub alpha: Option<f32>,
    /// LoRA base stored as Csr (default false).
    pub sparse_base: Option<bool>,
    /// Stage seed (lora, rigl; default the recipe's).
    pub seed: Option<u64>,
    /// RigL layout: `erk` (default) or `uniform`.
    pub layout: Option<String>,
    /// Steps between RigL updates (default 100).
    pub delta_t: Option<u64>,
    /// Initial RigL drop fraction (default 0.3).
    pub drop_fraction: Option<f64>,
    /// RigL growth: `rigl` (gradient, default) or `set` (random).
    pub grow: Option<String>,
}

/// Stage kinds and the keys each takes (besides kind, name, include, exclude).
pub const STAGE_KINDS: &[(&str, &[&str])] = &[
    (
        "gradual_magnitude",
        &[
            "sparsity",
            "start",
            "end",
            "every",
            "initial",
            "exponent",
            "switch_to_csr_at",
        ],
    ),
    ("masked_magnitude", &["sparsity", "at"]),
    ("sparse24", &["at"]),
    ("lowrank", &["at", "rank", "energy"]),
    ("lora", &["at", "rank", "alpha", "sparse_base", "seed"]),
    (
        "rigl",
        &[
            "sparsity",
            "layout",
            "delta_t",
            "drop_fraction",
            "end",
            "grow",
            "seed",
        ],
    ),
];

impl StageSpec {
    /// The kind-specific keys present.
    fn present(&self) -> Vec<&'static str> {
        let s = self;
        [
            ("sparsity", s.sparsity.is_some()),
            ("start", s.start.is_some()),
            ("end", s.end.is_some()),
            ("every", s.every.is_some()),
            ("initial", s.initial.is_some()),
            ("exponent", s.exponent.is_some()),
            ("switch_to_csr_at", s.switch_to_csr_at.is_some()),
            ("at", s.at.is_some()),
            ("rank", s.rank.is_some()),
            ("energy", s.energy.is_some()),
            ("alpha", s.alpha.is_some()),
            ("sparse_base", s.sparse_base.is_some()),
            ("seed", s.seed.is_some()),
            ("layout", s.layout.is_some()),
            ("delta_t", s.delta_t.is_some()),
            ("drop_fraction", s.drop_fraction.is_some()),
            ("grow", s.grow.is_some()),
        ]
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(k, _)| k)
        .collect()
    }
}

/// Checks a [`RecipeSpec`], pointing every error at its key's line.
pub struct Checker<'a> {
    /// Key lines of the recipe text.
    pub spans: &'a Spans<'a>,
    /// The file named in errors.
    pub file: &'a str,
}

/// `["a", "b"]` as a key path.
pub fn keys(ks: &[&str]) -> Vec<Seg> {
    ks.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// `stage[i].key` as a key path (`key` empty: the stage itself).
pub fn stage_key(i: usize, key: &str) -> Vec<Seg> {
    let mut p = vec![Seg::Key("stage".into()), Seg::Index(i)];
    if !key.is_empty() {
        p.push(Seg::Key(key.into()));
    }
    p
}

fn in_unit(x: f64) -> bool {
    x.is_finite() && (0.0..1.0).contains(&x)
}

impl Checker<'_> {
    /// An [`Error::Recipe`] at `path`.
    pub fn err(&self, path: &[Seg], detail: impl Into<String>) -> Error {
        Error::Recipe {
            path: self.file.to_string(),
            line: self.spans.line(path),
            key: path_string(path),
            detail: detail.into(),
        }
    }

    fn only(
        &self,
        table: &str,
        kind: &str,
        present: &[(&str, bool)],
        allowed: &[&str],
    ) -> Result<()> {
        for (k, p) in present {
            if *p && !allowed.contains(k) {
                return Err(self.err(
                    &keys(&[table, k]),
                    format!("key {k} does not apply to {table} kind {kind:?}"),
                ));
            }
        }
        Ok(())
    }

    fn need<T: Copy>(&self, v: Option<T>, path: &[Seg], what: &str) -> Result<T> {
        v.ok_or_else(|| self.err(path, format!("missing: {what}")))
    }

    /// Every check of the recipe.
    pub fn check(&self, r: &RecipeSpec) -> Result<()> {
        if r.name.trim().is_empty() {
            return Err(self.err(&keys(&["name"]), "missing or empty: the run's name"));
        }
        let steps = self.check_train(r)?;
        self.check_model(r)?;
        self.check_data(r)?;
        self.check_optimizer(r, steps)?;
        for (i, s) in r.stage.iter().enumerate() {
            self.check_stage(i, s, steps)?;
        }
        self.stage_names(&r.stage)?;
        Ok(())
    }

    /// The callback name of every stage: its `name`, else its kind, else `{kind}.{i}` when another
    /// stage has the kind's name. Two stages with one name are an error (their checkpoint states
    /// would collide), also when a default name is the `name` of an earlier stage.
    pub fn stage_names(&self, stages: &[StageSpec]) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for (i, st) in stages.iter().enumerate() {
            let name = match &st.name {
                Some(n) => n.clone(),
                None if names.contains(&st.kind) => format!("{}.{i}", st.kind),
                None => st.kind.clone(),
            };
            if names.contains(&name) {
                let (key, detail) = match &st.name {
                    Some(n) => ("name", format!("{n:?} names another stage too")),
                    None => (
                        "kind",
                        format!(
                            "this stage's default name {name:?} is the name of another stage: give it a `name`"
                        ),
                    ),
                };
                return Err(self.err(&stage_key(i, key), detail));
            }
            names.push(name);
        }
        Ok(names)
    }

    fn check_train(&self, r: &RecipeSpec) -> Result<u64> {
        let t = &r.train;
        let steps = self.need(t.steps, &keys(&["train", "steps"]), "the number of steps")?;
        if steps == 0 {
            return Err(self.err(&keys(&["train", "steps"]), "must be at least 1"));
        }
        if let Some(c) = t.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(self.err(&keys(&["train", "grad_clip"]), format!("{c} must be > 0")));
        }
        for (k, v) in [
            ("early_stopping_patience", t.early_stopping_patience),
            ("checkpoint_every", t.checkpoint_every),
            ("checkpoint_keep", t.checkpoint_keep.map(|k| k as u64)),
        ] {
            if v == Some(0) {
                return Err(self.err(&keys(&["train", k]), "must be at least 1"));
            }
        }
        if let Some(d) = t.early_stopping_min_delta
            && !(d.is_finite() && d >= 0.0)
        {
            return Err(self.err(
                &keys(&["train", "early_stopping_min_delta"]),
                format!("{d} must be >= 0"),
            ));
        }
        if t.early_stopping_patience.is_none() && t.early_stopping_min_delta.is_some() {
            return Err(self.err(
                &keys(&["train", "early_stopping_min_delta"]),
                "applies only with train.early_stopping_patience",
            ));
        }
        if t.checkpoint_dir.as_deref().is_some_and(|d| d.is_empty()) {
            return Err(self.err(
                &keys(&["train", "checkpoint_dir"]),
                "empty: give a folder (default checkpoints/{name})",
            ));
        }
        if t.checkpoint_every.is_none() {
            for (k, p) in [
                ("checkpoint_dir", t.checkpoint_dir.is_some()),
                ("checkpoint_keep", t.checkpoint_keep.is_some()),
            ] {
                if p {
                    return Err(self.err(
                        &keys(&["train", k]),
                        "applies only with train.checkpoint_every",
                    ));
                }
            }
        }
        Ok(steps)
    }

    fn check_model(&self, r: &RecipeSpec) -> Result<()> {
        let m = &r.model;
        let present = [
            ("vocab", m.vocab.is_some()),
            ("ctx", m.ctx.is_some()),
            ("layers", m.layers.is_some()),
            ("heads", m.heads.is_some()),
            ("width", m.width.is_some()),
            ("tie_weights", m.tie_weights.is_some()),
            ("sizes", m.sizes.is_some()),
            ("activation", m.activation.is_some()),
            ("precision", m.precision.is_some()),
        ];
        if let Some(p) = &m.precision
            && p != "f32"
            && p != "bf16"
        {
            return Err(self.err(
                &keys(&["model", "precision"]),
                format!("unknown precision {p:?} (f32 or bf16)"),
            ));
        }
        match m.kind.as_str() {
            "gpt" => {
                self.only(
                    "model",
                    "gpt",
                    &present,
                    &[
                        "vocab",
                        "ctx",
                        "layers",
                        "heads",
                        "width",
                        "tie_weights",
                        "precision",
                    ],
                )?;
                for (k, v) in [
                    ("ctx", m.ctx),
                    ("layers", m.layers),
                    ("heads", m.heads),
                    ("width", m.width),
                ] {
                    let v = self.need(v, &keys(&["model", k]), k)?;
                    if v == 0 {
                        return Err(self.err(&keys(&["model", k]), "must be at least 1"));
                    }
                }
                if let (Some(w), Some(h)) = (m.width, m.heads)
                    && !w.is_multiple_of(h)
                {
                    return Err(self.err(
                        &keys(&["model", "width"]),
                        format!("width {w} is not a multiple of heads {h}"),
                    ));
                }
                if let Some(v) = m.vocab
                    && v < 256
                {
                    return Err(self.err(
                        &keys(&["model", "vocab"]),
                        format!("{v} is below 256, the byte vocabulary of the text data"),
                    ));
                }
            }
            "mlp" => {
                self.only(
                    "model",
                    "mlp",
                    &present,
                    &["sizes", "activation", "precision"],
                )?;
                let p = keys(&["model", "sizes"]);
                let sizes = m
                    .sizes
                    .as_ref()
                    .ok_or_else(|| self.err(&p, "missing: [input, hidden..., classes]"))?;
                if sizes.len() < 2 || sizes.contains(&0) {
                    return Err(self.err(
                        &p,
                        format!("{sizes:?}: need at least input and classes, all > 0"),
                    ));
                }
                if let Some(a) = &m.activation
                    && a != "relu"
                    && a != "gelu"
                {
                    return Err(self.err(
                        &keys(&["model", "activation"]),
                        format!("unknown activation {a:?} (relu or gelu)"),
                    ));
                }
            }
            "" => return Err(self.err(&keys(&["model", "kind"]), "missing: gpt or mlp")),
            k => {
                return Err(self.err(
                    &keys(&["model", "kind"]),
                    format!("unknown model kind {k:?} (gpt or mlp)"),
                ));
            }
        }
        Ok(())
    }

    fn check_data(&self, r: &RecipeSpec) -> Result<()> {
        let d = &r.data;
        let present = [
            ("path", d.path.is_some()),
            ("dir", d.dir.is_some()),
            ("batch", d.batch.is_some()),
            ("context", d.context.is_some()),
            ("val_fraction", d.val_fraction.is_some()),
            ("val_batches", d.val_batches.is_some()),
        ];
        let kind = d.kind.as_str();
        let (allowed, model): (&[&str], &str) = match kind {
            "text" => (
                &["path", "batch", "context", "val_fraction", "val_batches"],
                "gpt",
            ),
            "digits" => (&["path", "batch", "val_fraction"], "mlp"),
            "idx" | "fashion-mnist" => (&["dir", "batch"], "mlp"),
            "" => {
                return Err(self.err(
                    &keys(&["data", "kind"]),
                    "missing: text, digits, idx or fashion-mnist",
                ));
            }
            k => {
                return Err(self.err(
                    &keys(&["data", "kind"]),
                    format!("unknown data kind {k:?} (text, digits, idx or fashion-mnist)"),
                ));
            }
        };
        if r.model.kind != model {
            return Err(self.err(
                &keys(&["data", "kind"]),
                format!(
                    "{kind} data needs a {model} model, [model] is {:?}",
                    r.model.kind
                ),
            ));
        }
        self.only("data", kind, &present, allowed)?;
        if kind == "idx" && d.dir.is_none() {
            return Err(self.err(&keys(&["data", "dir"]), "missing: the IDX directory"));
        }
        if d.batch == Some(0) || d.val_batches == Some(0) || d.context == Some(0) {
            let k = if d.batch == Some(0) {
                "batch"
            } else if d.val_batches == Some(0) {
                "val_batches"
            } else {
                "context"
            };
            return Err(self.err(&keys(&["data", k]), "must be at least 1"));
        }
        if let Some(f) = d.val_fraction
            && !(f > 0.0 && f < 1.0)
        {
            return Err(self.err(
                &keys(&["data", "val_fraction"]),
                format!("{f} is outside (0, 1)"),
            ));
        }
        if let (Some(c), Some(ctx)) = (d.context, r.model.ctx)
            && c > ctx
        {
            return Err(self.err(
                &keys(&["data", "context"]),
                format!("{c} exceeds the model's ctx {ctx}"),
            ));
        }
        Ok(())
    }

    fn check_optimizer(&self, r: &RecipeSpec, steps: u64) -> Result<()> {
        let o = &r.optimizer;
        let present = [
            ("betas", o.betas.is_some()),
            ("eps", o.eps.is_some()),
            ("weight_decay", o.weight_decay.is_some()),
            ("momentum", o.momentum.is_some()),
            ("dampening", o.dampening.is_some()),
            ("nesterov", o.nesterov.is_some()),
        ];
        match o.kind.as_str() {
            "adamw" => self.only(
                "optimizer",
                "adamw",
                &present,
                &["betas", "eps", "weight_decay"],
            )?,
            "sgd" => self.only(
                "optimizer",
                "sgd",
                &present,
                &["momentum", "dampening", "nesterov", "weight_decay"],
            )?,
            "" => return Err(self.err(&keys(&["optimizer", "kind"]), "missing: adamw or sgd")),
            k => {
                return Err(self.err(
                    &keys(&["optimizer", "kind"]),
                    format!("unknown optimizer kind {k:?} (adamw or sgd)"),
                ));
            }
        }
        let lr = self.need(o.lr, &keys(&["optimizer", "lr"]), "the learning rate")?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(self.err(&keys(&["optimizer", "lr"]), format!("{lr} must be > 0")));
        }
        if let Some([b1, b2]) = o.betas
            && !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2))
        {
            return Err(self.err(
                &keys(&["optimizer", "betas"]),
                format!("[{b1}, {b2}]: both must be in [0, 1)"),
            ));
        }
        // the optimizers' own ranges, checked here so that the error points at the key
        let unit = |x: f32| x.is_finite() && (0.0..1.0).contains(&x);
        let ranges = [
            (
                "eps",
                o.eps,
                o.eps.is_some_and(|x| !(x.is_finite() && x > 0.0)),
                "> 0",
            ),
            (
                "weight_decay",
                o.weight_decay,
                o.weight_decay.is_some_and(|x| !(x.is_finite() && x >= 0.0)),
                ">= 0",
            ),
            (
                "momentum",
                o.momentum,
                o.momentum.is_some_and(|x| !unit(x)),
                "in [0, 1)",
            ),
            (
                "dampening",
                o.dampening,
                o.dampening.is_some_and(|x| !unit(x)),
                "in [0, 1)",
            ),
        ];
        for (k, v, bad, want) in ranges {
            if let (true, Some(v)) = (bad, v) {
                return Err(self.err(&keys(&["optimizer", k]), format!("{v} must be {want}")));
            }
        }
        let s = &r.schedule;
        match s.kind.as_str() {
            "constant" => self.only(
                "schedule",
                "constant",
                &[
                    ("warmup", s.warmup.is_some()),
                    ("min_lr", s.min_lr.is_some()),
                ],
                &[],
            )?,
            "cosine" | "linear" => {
                if let Some(w) = s.warmup
                    && w > steps
                {
                    return Err(self.err(
                        &keys(&["schedule", "warmup"]),
                        format!("{w} exceeds train.steps {steps}"),
                    ));
                }
                if let Some(m) = s.min_lr
                    && !(m >= 0.0 && m <= lr)
                {
                    return Err(self.err(
                        &keys(&["schedule", "min_lr"]),
                        format!("{m} must be in [0, optimizer.lr = {lr}]"),
                    ));
                }
            }
            k => {
                return Err(self.err(
                    &keys(&["schedule", "kind"]),
                    format!("unknown schedule kind {k:?} (constant, cosine or linear)"),
                ));
            }
        }
        Ok(())
    }

    fn check_stage(&self, i: usize, s: &StageSpec, steps: u64) -> Result<()> {
        let kp = |k: &str| stage_key(i, k);
        let Some((kind, allowed)) = STAGE_KINDS.iter().find(|(k, _)| *k == s.kind) else {
            let names: Vec<&str> = STAGE_KINDS.iter().map(|k| k.0).collect();
            let detail = if s.kind.is_empty() {
                format!("missing: one of {}", names.join(", "))
            } else {
                format!(
                    "unknown stage kind {:?} (one of {})",
                    s.kind,
                    names.join(", ")
                )
            };
            return Err(self.err(&kp("kind"), detail));
        };
        for k in s.present() {
            if !allowed.contains(&k) {
                return Err(self.err(
                    &kp(k),
                    format!("key {k} does not apply to stage kind {kind:?}"),
                ));
            }
        }
        let sparsity = |v: Option<f64>, what: &str| -> Result<f64> {
            let x = self.need(v, &kp("sparsity"), what)?;
            if !in_unit(x) {
                return Err(self.err(&kp("sparsity"), format!("{x} is outside [0, 1)")));
            }
            Ok(x)
        };
        let step_in_run = |v: u64, key: &str| -> Result<()> {
            if v >= steps {
                return Err(self.err(
                    &kp(key),
                    format!("{v} is not a step of the run (train.steps = {steps})"),
                ));
            }
            Ok(())
        };
        match *kind {
            "gradual_magnitude" => {
                sparsity(s.sparsity, "the target sparsity")?;
                let start = s.start.unwrap_or(0);
                let end = match s.end {
                    None => return Err(self.err(&kp("end"), "missing: the last pruning step")),
                    Some(EndSpec::Step(e)) => e,
                    Some(EndSpec::Fraction(f)) => {
                        return Err(self.err(&kp("end"), format!("{f}: must be a step (integer)")));
                    }
                };
                if end < start {
                    return Err(self.err(&kp("end"), format!("end {end} is before start {start}")));
                }
                step_in_run(end, "end")?;
                if s.every == Some(0) {
                    return Err(self.err(&kp("every"), "must be at least 1"));
                }
                for (k, v) in [
                    ("initial", s.initial),
                    ("switch_to_csr_at", s.switch_to_csr_at),
                ] {
                    if let Some(x) = v
                        && !(x.is_finite() && (0.0..=1.0).contains(&x))
                    {
                        return Err(self.err(&kp(k), format!("{x} is outside [0, 1]")));
                    }
                }
                if let (Some(i), Some(f)) = (s.initial, s.sparsity)
                    && i > f
                {
                    return Err(self.err(
                        &kp("initial"),
                        format!("{i} is above the final sparsity {f}"),
                    ));
                }
                if let Some(e) = s.exponent
                    && !(e.is_finite() && e > 0.0)
                {
                    return Err(self.err(&kp("exponent"), format!("{e} must be > 0")));
                }
            }
            "masked_magnitude" => {
                sparsity(s.sparsity, "the sparsity")?;
                step_in_run(self.need(s.at, &kp("at"), "the step")?, "at")?;
            }
            "sparse24" => step_in_run(self.need(s.at, &kp("at"), "the step")?, "at")?,
            "lowrank" => {
                step_in_run(self.need(s.at, &kp("at"), "the step")?, "at")?;
                match (s.rank, s.energy) {
                    (Some(_), Some(_)) => {
                        return Err(self.err(&kp("energy"), "give rank or energy, not both"));
                    }
                    (None, None) => {
                        return Err(self.err(&kp("rank"), "missing: rank or energy"));
                    }
                    (Some(0), _) => return Err(self.err(&kp("rank"), "must be at least 1")),
                    (_, Some(e)) if !(e > 0.0 && e <= 1.0) => {
                        return Err(self.err(&kp("energy"), format!("{e} is outside (0, 1]")));
                    }
                    _ => {}
                }
            }
            "lora" => {
                step_in_run(self.need(s.at, &kp("at"), "the step")?, "at")?;
                if self.need(s.rank, &kp("rank"), "the adapter rank")? == 0 {
                    return Err(self.err(&kp("rank"), "must be at least 1"));
                }
                if let Some(a) = s.alpha
                    && !(a.is_finite() && a > 0.0)
                {
                    return Err(self.err(&kp("alpha"), format!("{a} must be > 0")));
                }
            }
            "rigl" => {
                sparsity(s.sparsity, "the sparsity")?;
                if let Some(l) = &s.layout
                    && l != "erk"
                    && l != "uniform"
                {
                    return Err(self.err(&kp("layout"), format!("{l:?}: erk or uniform")));
                }
                if let Some(g) = &s.grow
                    && g != "rigl"
                    && g != "set"
                {
                    return Err(self.err(&kp("grow"), format!("{g:?}: rigl or set")));
                }
                if s.delta_t == Some(0) {
                    return Err(self.err(&kp("delta_t"), "must be at least 1"));
                }
                if let Some(f) = s.drop_fraction
                    && !(0.0..=1.0).contains(&f)
                {
                    return Err(self.err(&kp("drop_fraction"), format!("{f} is outside [0, 1]")));
                }
                match s.end {
                    Some(EndSpec::Fraction(f)) if !(f > 0.0 && f <= 1.0) => {
                        return Err(self.err(&kp("end"), format!("fraction {f} is outside (0, 1]")));
                    }
                    Some(EndSpec::Step(e)) if e > steps => {
                        return Err(self.err(
                            &kp("end"),
                            format!("step {e} is past the run (train.steps = {steps})"),
                        ));
                    }
                    _ => {}
                }
            }
            k => return Err(self.err(&kp("kind"), format!("stage kind {k:?} has no checks"))),
        }
        Ok(())
    }
}

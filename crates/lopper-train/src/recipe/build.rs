//! [`Recipe::build`]: model, data, optimizer, schedule, stages and train callbacks.
use super::Recipe;
use super::spans::Spans;
use super::spec::{Checker, EndSpec, StageSpec, keys, stage_key};
use crate::compress::{
    GradualMagnitude, GradualMagnitudeConfig, Grow, LayerScope, Layout, LowRankRule,
    MaskedMagnitude, Rigl, RiglConfig, RiglEnd, ToLora, ToLowRank, ToSparse24,
};
use crate::data::idx::FASHION_MNIST_DEBIAN_DIR;
use crate::data::{
    ImageSource, Images, TextData, TextSource, TextSourceConfig, digits_embedded, digits_from_file,
    fashion_mnist, mnist,
};
use crate::{
    AdamW, AdamWConfig, Callback, Checkpointing, Constant, DataSource, EarlyStopping, LrSchedule,
    Model, Optimizer, Result, Sgd, SgdConfig, TrainConfig, Trainer, WarmupCosine, WarmupLinear,
};
use lopper_nn::{Gpt, GptConfig, Mlp, MlpActivation};

/// Defaults of keys the schema leaves optional (docs/recipes.md lists them).
mod defaults {
    pub const VOCAB: usize = 256;
    pub const TEXT_BATCH: usize = 8;
    pub const IMAGE_BATCH: usize = 64;
    pub const VAL_FRACTION: f64 = 0.1;
    pub const VAL_BATCHES: usize = 8;
    pub const DIGITS_VAL_FRACTION: f64 = 0.2;
}

impl Recipe {
    /// Builds the run: the model (seeded by `seed`), the data, the optimizer, the schedule, one
    /// callback per `[[stage]]` in order, then EarlyStopping and Checkpointing when `[train]`
    /// asks for them; the trainer carries [`Recipe::hash`]. Errors that depend on files or on
    /// the data (a missing dataset, MLP sizes that do not fit it) point at the key that names
    /// them.
    pub fn build(&self) -> Result<Trainer> {
        let s = &self.spec;
        let (model, data) = self.model_and_data()?;
        self.check_stages(model.as_ref())?;
        let o = &s.optimizer;
        let lr = o.lr.unwrap_or(0.0); // checked present at parse
        let opt_err = |e: crate::Error| self.err(&keys(&["optimizer", "kind"]), e.to_string());
        let optimizer: Box<dyn Optimizer> = match o.kind.as_str() {
            "adamw" => {
                let d = AdamWConfig::default();
                let [beta1, beta2] = o.betas.unwrap_or([d.beta1, d.beta2]);
                Box::new(
                    AdamW::new(AdamWConfig {
                        beta1,
                        beta2,
                        eps: o.eps.unwrap_or(d.eps),
                        weight_decay: o.weight_decay.unwrap_or(d.weight_decay),
                    })
                    .map_err(opt_err)?,
                )
            }
            _ => {
                let d = SgdConfig::default();
                Box::new(
                    Sgd::new(SgdConfig {
                        momentum: o.momentum.unwrap_or(d.momentum),
                        dampening: o.dampening.unwrap_or(d.dampening),
                        nesterov: o.nesterov.unwrap_or(d.nesterov),
                        weight_decay: o.weight_decay.unwrap_or(d.weight_decay),
                    })
                    .map_err(opt_err)?,
                )
            }
        };
        let t = &s.train;
        let steps = t.steps.unwrap_or(1);
        let sc = &s.schedule;
        let sched_err = |e: crate::Error| self.err(&keys(&["schedule", "kind"]), e.to_string());
        let (warmup, min_lr) = (sc.warmup.unwrap_or(0), sc.min_lr.unwrap_or(0.0));
        let schedule: Box<dyn LrSchedule> = match sc.kind.as_str() {
            "cosine" => Box::new(WarmupCosine::new(lr, warmup, steps, min_lr).map_err(sched_err)?),
            "linear" => Box::new(WarmupLinear::new(lr, warmup, steps, min_lr).map_err(sched_err)?),
            _ => Box::new(Constant::new(lr).map_err(sched_err)?),
        };
        let d = TrainConfig::default();
        let cfg = TrainConfig {
            steps,
            eval_every: t.eval_every.unwrap_or(d.eval_every),
            log_every: t.log_every.unwrap_or(d.log_every),
            grad_clip: t.grad_clip,
            ..d
        };
        let mut trainer = Trainer::new(model, optimizer, schedule, data, cfg);
        let spans = Spans::new(&self.text);
        let checker = Checker {
            spans: &spans,
            file: &self.source,
        };
        let names = checker.stage_names(&s.stage)?;
        for (i, (st, name)) in s.stage.iter().zip(names).enumerate() {
            let cb = self.stage(i, st, name)?;
            trainer.add_callback(cb);
        }
        if let Some(p) = t.early_stopping_patience {
            let es =
                EarlyStopping::new(p, t.early_stopping_min_delta.unwrap_or(0.0)).map_err(|e| {
                    self.err(&keys(&["train", "early_stopping_patience"]), e.to_string())
                })?;
            trainer.add_callback(Box::new(es));
        }
        if let Some(every) = t.checkpoint_every {
            let dir = t
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| format!("checkpoints/{}", s.name));
            // a file in the way is found now, not after the first `every` steps
            crate::checkpoint::check_folder(std::path::Path::new(&dir)).map_err(|e| {
                let key = if t.checkpoint_dir.is_some() {
                    "checkpoint_dir"
                } else {
                    "checkpoint_every"
                };
                self.err(&keys(&["train", key]), format!("{dir}: {e}"))
            })?;
            let ck = Checkpointing::new(dir, every, t.checkpoint_keep.unwrap_or(2))
                .map_err(|e| self.err(&keys(&["train", "checkpoint_every"]), e.to_string()))?;
            trainer.add_callback(Box::new(ck));
        }
        trainer.set_recipe_hash(Some(self.hash()));
        Ok(trainer)
    }

    /// Checks every stage against the built model, before anything trains (so `lopper compare`
    /// fails before its first recipe runs, and the error names the recipe's line and key): the
    /// `include` / `exclude` regexes compile and select at least one Linear layer, a `sparse24`
    /// stage's layers have K a multiple of 4, a `lora` rank fits every selected layer, and no
    /// magnitude pruning stage prunes a layer after a `lowrank` or `lora` stage converted it.
    fn check_stages(&self, model: &dyn Model) -> Result<()> {
        let layers = model.linears();
        // per stage: its selection and the key that makes it
        let mut sels: Vec<(Vec<bool>, &str)> = Vec::new();
        for (i, st) in self.spec.stage.iter().enumerate() {
            let regex_key = if st.include.is_some() {
                "include"
            } else if st.exclude.is_some() {
                "exclude"
            } else {
                "kind"
            };
            let scope = LayerScope {
                include: st.include.clone(),
                exclude: st.exclude.clone(),
            };
            let sel = scope.selection(model).map_err(|e| match e {
                lopper_prune::Error::Regex { ref pattern, .. } => {
                    let key = if st.include.as_ref() == Some(pattern) {
                        "include"
                    } else {
                        "exclude"
                    };
                    self.err(&stage_key(i, key), e.to_string())
                }
                lopper_prune::Error::NoMatch {
                    which,
                    pattern,
                    sample,
                } => self.err(
                    &stage_key(i, which),
                    format!("{pattern:?} matches no Linear layer of the model (layers: {sample})"),
                ),
                _ => self.err(
                    &stage_key(i, regex_key),
                    format!("selects no Linear layer of the model ({e})"),
                ),
            })?;
            for (l, _) in layers.iter().zip(&sel).filter(|(_, s)| **s) {
                let (m, k) = (l.out_features(), l.in_features());
                if st.kind == "sparse24" && !k.is_multiple_of(4) {
                    return Err(self.err(
                        &stage_key(i, regex_key),
                        format!(
                            "selects layer {} with K = {k} input features, not a multiple of 4 (2:4 groups along K): exclude it",
                            l.name
                        ),
                    ));
                }
                if st.kind == "lora"
                    && let Some(r) = st.rank
                    && r > m.min(k)
                {
                    return Err(self.err(
                        &stage_key(i, "rank"),
                        format!(
                            "{r} is more than min(M, K) = {} of layer {} ({m} x {k})",
                            m.min(k),
                            l.name
                        ),
                    ));
                }
            }
            sels.push((sel, regex_key));
        }
        self.check_pruning_after_factoring(&layers, &sels)
    }

    /// Magnitude pruning (`gradual_magnitude`, `masked_magnitude`) needs a dense, masked or Csr
    /// weight: a pruning step on a layer that a `lowrank` or `lora` stage has already converted
    /// (at an earlier step, or at the same step by a stage earlier in the file, since stages run
    /// in file order) would fail in the middle of the run. Found here instead, at the pruning
    /// stage's selection key.
    fn check_pruning_after_factoring(
        &self,
        layers: &[&lopper_nn::Linear],
        sels: &[(Vec<bool>, &str)],
    ) -> Result<()> {
        let stages = &self.spec.stage;
        for (j, pj) in stages.iter().enumerate() {
            // the last step at which the stage prunes
            let last = match (pj.kind.as_str(), pj.end, pj.at) {
                ("gradual_magnitude", Some(EndSpec::Step(e)), _) => e,
                ("masked_magnitude", _, Some(at)) => at,
                _ => continue,
            };
            for (i, fi) in stages.iter().enumerate() {
                let what = match fi.kind.as_str() {
                    "lowrank" => "low-rank factors",
                    "lora" => "a LoRA adapter",
                    _ => continue,
                };
                let at = fi.at.unwrap_or(0);
                if !(last > at || (last == at && j > i)) {
                    continue;
                }
                let shared = layers
                    .iter()
                    .zip(sels[j].0.iter().zip(&sels[i].0))
                    .find(|(_, (a, b))| **a && **b);
                if let Some((l, _)) = shared {
                    return Err(self.err(
                        &stage_key(j, sels[j].1),
                        format!(
                            "selects layer {}, which stage[{i}] ({}) turns into {what} at step {at}, before this stage prunes it (last pruning step {last}): magnitude pruning needs a dense, masked or csr weight; split the layers with include and exclude",
                            l.name, fi.kind
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn model_and_data(&self) -> Result<(Box<dyn Model>, Box<dyn DataSource>)> {
        let s = &self.spec;
        let (m, d) = (&s.model, &s.data);
        let data_err =
            |key: &str, e: crate::data::DataError| self.err(&keys(&["data", key]), e.to_string());
        if m.kind == "gpt" {
            let ctx = m.ctx.unwrap_or(1);
            self.check_gpt_memory()?;
            let text = match &d.path {
                Some(p) => TextData::from_file(p).map_err(|e| data_err("path", e))?,
                None => TextData::embedded_kjv(),
            };
            let val_fraction = d.val_fraction.unwrap_or(defaults::VAL_FRACTION);
            // a fraction that leaves no validation or no training byte is the fraction's fault
            // when the recipe gives one (the text's otherwise)
            text.split_point(val_fraction).map_err(|e| {
                let key = match (d.val_fraction, &d.path) {
                    (Some(_), _) => "val_fraction",
                    (None, Some(_)) => "path",
                    (None, None) => "kind",
                };
                data_err(key, e)
            })?;
            let src = TextSource::new(
                text,
                TextSourceConfig {
                    batch: d.batch.unwrap_or(defaults::TEXT_BATCH),
                    context: d.context.unwrap_or(ctx),
                    seed: s.seed,
                    val_fraction,
                    val_batches: d.val_batches.unwrap_or(defaults::VAL_BATCHES),
                },
            )
            .map_err(|e| data_err(if d.path.is_some() { "path" } else { "kind" }, e))?;
            let mut gpt = Gpt::new(GptConfig {
                vocab: m.vocab.unwrap_or(defaults::VOCAB),
                ctx,
                layers: m.layers.unwrap_or(1),
                heads: m.heads.unwrap_or(1),
                width: m.width.unwrap_or(1),
                tie_weights: m.tie_weights.unwrap_or(true),
                seed: s.seed,
            })
            .map_err(|e| self.err(&keys(&["model", "kind"]), e.to_string()))?;
            gpt.set_precision(precision(m.precision.as_deref()));
            return Ok((Box::new(gpt), Box::new(src)));
        }
        let batch = d.batch.unwrap_or(defaults::IMAGE_BATCH);
        let src = match d.kind.as_str() {
            "digits" => {
                let imgs: Images = match &d.path {
                    Some(p) => digits_from_file(p).map_err(|e| data_err("path", e))?,
                    None => digits_embedded().map_err(|e| data_err("kind", e))?,
                };
                let f = d.val_fraction.unwrap_or(defaults::DIGITS_VAL_FRACTION);
                let key = if d.path.is_some() { "path" } else { "kind" };
                imgs.validate().map_err(|e| data_err(key, e))?;
                // a split that leaves either part empty is the fraction's fault when given
                let split_key = if d.val_fraction.is_some() {
                    "val_fraction"
                } else {
                    key
                };
                let (train, val) = imgs.split(f, s.seed).map_err(|e| data_err(split_key, e))?;
                // a batch outside 1..=rows is the batch's fault, as for IDX sets
                let key = if train.rows > 0 && val.rows > 0 && !(1..=train.rows).contains(&batch) {
                    "batch"
                } else {
                    key
                };
                ImageSource::new(train, val, batch, s.seed).map_err(|e| data_err(key, e))?
            }
            kind => {
                let dir = d
                    .dir
                    .clone()
                    .unwrap_or_else(|| FASHION_MNIST_DEBIAN_DIR.to_string());
                let key = if d.dir.is_some() { "dir" } else { "kind" };
                let pair = if kind == "fashion-mnist" {
                    fashion_mnist(&dir)
                } else {
                    mnist(&dir)
                }
                .map_err(|e| data_err(key, e))?;
                // an empty set is the folder's fault, a batch outside 1..=rows the batch's
                let rows = (pair.train.rows, pair.test.rows);
                let key = if rows.0 > 0 && rows.1 > 0 && !(1..=rows.0).contains(&batch) {
                    "batch"
                } else {
                    key
                };
                ImageSource::new(pair.train, pair.test, batch, s.seed)
                    .map_err(|e| data_err(key, e))?
            }
        };
        let sizes = m.sizes.clone().unwrap_or_default();
        let (dim, classes) = (src.train().dim, src.train().classes);
        if sizes.first() != Some(&dim) || sizes.last() != Some(&classes) {
            return Err(self.err(
                &keys(&["model", "sizes"]),
                format!("{sizes:?} does not fit the data: input {dim} features, {classes} classes"),
            ));
        }
        self.check_mlp_memory(&sizes, batch, src.val().rows)?;
        let act = match m.activation.as_deref() {
            Some("gelu") => MlpActivation::Gelu,
            _ => MlpActivation::Relu,
        };
        let mut mlp = Mlp::new(&sizes, act, s.seed)
            .map_err(|e| self.err(&keys(&["model", "sizes"]), e.to_string()))?;
        mlp.set_precision(precision(m.precision.as_deref()));
        Ok((Box::new(mlp), Box::new(src)))
    }

    /// Refuses a GPT run whose [`Need`] exceeds the physical memory (see [`Recipe::refuse`]).
    fn check_gpt_memory(&self) -> Result<()> {
        let (m, d) = (&self.spec.model, &self.spec.data);
        let ctx = m.ctx.unwrap_or(1) as f64;
        // the keys that size the run, their values and the smallest values they can take
        let ctx_key: &[&str] = if d.context.is_some() {
            &["data", "context"]
        } else {
            &["model", "ctx"]
        };
        let dims: [(&[&str], f64, f64); 7] = [
            (
                &["data", "batch"],
                d.batch.unwrap_or(defaults::TEXT_BATCH) as f64,
                1.0,
            ),
            (
                &["data", "val_batches"],
                d.val_batches.unwrap_or(defaults::VAL_BATCHES) as f64,
                1.0,
            ),
            (ctx_key, d.context.map_or(ctx, |c| c as f64), 1.0),
            (
                &["model", "vocab"],
                m.vocab.unwrap_or(defaults::VOCAB) as f64,
                256.0,
            ),
            (&["model", "width"], m.width.unwrap_or(1) as f64, 1.0),
            (&["model", "layers"], m.layers.unwrap_or(1) as f64, 1.0),
            (&["model", "heads"], m.heads.unwrap_or(1) as f64, 1.0),
        ];
        let tied = m.tie_weights.unwrap_or(true);
        let need = |x: &[f64]| {
            let [b, vb, t, v, c, l, h] = [x[0], x[1], x[2], x[3], x[4], x[5], x[6]];
            let pos = if d.context.is_some() { ctx } else { t };
            let n = b * t;
            Need {
                // embeddings, per block qkv, proj, fc, fc_proj (12 C^2) with biases and
                // LayerNorms, the final LayerNorm, an untied head
                params: (v + pos) * c
                    + l * (12.0 * c * c + 13.0 * c)
                    + 2.0 * c
                    + if tied { 0.0 } else { v * c },
                // per block and token: the residual, ln1, qkv, attention output, res2, ln2,
                // fc and gelu (16 C) and the attention probabilities (heads x t); logits,
                // probabilities and their gradient; the backward's scratch (about 10 C)
                acts: 4.0 * n * (l * (16.0 * c + h * t) + 3.0 * v + 10.0 * c),
                // tokens and targets (u32) of one training batch and every validation batch
                data: 8.0 * n * (vb + 1.0),
            }
        };
        self.refuse(&dims, need)
    }

    /// Refuses an MLP run whose [`Need`] exceeds the physical memory (see [`Recipe::refuse`]).
    fn check_mlp_memory(&self, sizes: &[usize], batch: usize, val_rows: usize) -> Result<()> {
        let hidden: Vec<f64> = sizes[1..sizes.len() - 1]
            .iter()
            .map(|&h| h as f64)
            .collect();
        let (input, classes) = (sizes[0] as f64, sizes[sizes.len() - 1] as f64);
        // `model.sizes` scales as a whole: its smallest is every hidden layer of width 1
        let scale = hidden.iter().copied().fold(1.0, f64::max);
        let dims: [(&[&str], f64, f64); 2] = [
            (&["data", "batch"], batch as f64, 1.0),
            (&["model", "sizes"], scale, 1.0),
        ];
        let val = val_rows as f64;
        let need = |x: &[f64]| {
            let (b, k) = (x[0], x[1] / scale);
            let mut all = vec![input];
            all.extend(hidden.iter().map(|h| (h * k).max(1.0)));
            all.push(classes);
            let params: f64 = all.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
            let widest = all.iter().copied().fold(0.0, f64::max);
            Need {
                params,
                // per row: pre- and post-activation of every layer, the input, probabilities
                // and two gradient buffers
                acts: 4.0 * b * (2.0 * all[1..].iter().sum::<f64>() + 3.0 * widest),
                // one training batch and the validation batches of features
                data: 4.0 * (b + val) * input,
            }
        };
        self.refuse(&dims, need)
    }

    /// An error when `need` of `dims` (key, value, smallest value) exceeds the physical memory,
    /// at the key whose reduction to its smallest value saves the most (nothing where the memory
    /// is unknown).
    fn refuse(&self, dims: &[(&[&str], f64, f64)], need: impl Fn(&[f64]) -> Need) -> Result<()> {
        let Some(mem) = lopper_tensor::mem::physical_memory() else {
            return Ok(());
        };
        let x: Vec<f64> = dims.iter().map(|d| d.1).collect();
        let n = need(&x);
        if n.bytes() <= mem as f64 {
            return Ok(());
        }
        let mut worst = (0, f64::NEG_INFINITY);
        for (i, d) in dims.iter().enumerate() {
            let mut y = x.clone();
            y[i] = d.2.min(d.1);
            let saved = n.bytes() - need(&y).bytes();
            if saved > worst.1 {
                worst = (i, saved);
            }
        }
        let gib = |b: f64| b / (1u64 << 30) as f64;
        Err(self.err(
            &keys(dims[worst.0].0),
            format!(
                "the run would need about {:.1} GiB (weights, gradients and optimizer moments {:.1} GiB, activations {:.1} GiB, data batches {:.1} GiB), more than this machine's memory ({:.1} GiB)",
                gib(n.bytes()),
                gib(16.0 * n.params),
                gib(n.acts),
                gib(n.data),
                gib(mem as f64)
            ),
        ))
    }

    /// The callback of stage `i`, called `name` ([`Checker::stage_names`]).
    fn stage(&self, i: usize, st: &StageSpec, name: String) -> Result<Box<dyn Callback>> {
        let scope = LayerScope {
            include: st.include.clone(),
            exclude: st.exclude.clone(),
        };
        let here = |e: crate::Error| self.err(&stage_key(i, "kind"), e.to_string());
        let seed = st.seed.unwrap_or(self.spec.seed);
        let cb: Box<dyn Callback> = match st.kind.as_str() {
            "gradual_magnitude" => {
                let d = GradualMagnitudeConfig::default();
                let end = match st.end {
                    Some(EndSpec::Step(e)) => e,
                    _ => 0,
                };
                Box::new(
                    GradualMagnitude::new(GradualMagnitudeConfig {
                        target: st.sparsity.unwrap_or(d.target),
                        start: st.start.unwrap_or(0),
                        end,
                        every: st.every.unwrap_or(d.every),
                        initial: st.initial.unwrap_or(d.initial),
                        exponent: st.exponent.unwrap_or(d.exponent),
                        scope,
                        switch_to_csr_at: st.switch_to_csr_at.unwrap_or(d.switch_to_csr_at),
                    })
                    .map_err(here)?
                    .with_name(name),
                )
            }
            "masked_magnitude" => Box::new(
                MaskedMagnitude::new(st.sparsity.unwrap_or(0.0), st.at.unwrap_or(0), scope)
                    .map_err(here)?
                    .with_name(name),
            ),
            "sparse24" => Box::new(ToSparse24::new(st.at.unwrap_or(0), scope).with_name(name)),
            "lowrank" => {
                let rule = match (st.rank, st.energy) {
                    (Some(r), _) => LowRankRule::Rank(r),
                    (None, e) => LowRankRule::Energy(e.unwrap_or(1.0)),
                };
                Box::new(
                    ToLowRank::new(st.at.unwrap_or(0), rule, scope)
                        .map_err(here)?
                        .with_name(name),
                )
            }
            "lora" => {
                let rank = st.rank.unwrap_or(1);
                Box::new(
                    ToLora::new(
                        st.at.unwrap_or(0),
                        rank,
                        st.alpha.unwrap_or(rank as f32),
                        st.sparse_base.unwrap_or(false),
                        seed,
                        scope,
                    )
                    .map_err(here)?
                    .with_name(name),
                )
            }
            _ => {
                let d = RiglConfig::default();
                Box::new(
                    Rigl::new(RiglConfig {
                        sparsity: st.sparsity.unwrap_or(d.sparsity),
                        layout: match st.layout.as_deref() {
                            Some("uniform") => Layout::Uniform,
                            _ => Layout::Erk,
                        },
                        delta_t: st.delta_t.unwrap_or(d.delta_t),
                        drop_fraction: st.drop_fraction.unwrap_or(d.drop_fraction),
                        end: match st.end {
                            Some(EndSpec::Step(e)) => RiglEnd::Step(e),
                            Some(EndSpec::Fraction(f)) => RiglEnd::Fraction(f),
                            None => d.end,
                        },
                        grow: match st.grow.as_deref() {
                            Some("set") => Grow::Random,
                            _ => Grow::Gradient,
                        },
                        seed,
                        scope,
                    })
                    .map_err(here)?
                    .with_name(name),
                )
            }
        };
        Ok(cb)
    }
}

/// A rough estimate of a run's memory, in elements and bytes (f64: no overflow).
#[derive(Clone, Copy, Debug)]
struct Need {
    /// Parameters (each with its gradient and two AdamW moments: 16 bytes).
    params: f64,
    /// Bytes of the activations kept for the backward and of the backward's buffers.
    acts: f64,
    /// Bytes of the data batches.
    data: f64,
}

impl Need {
    fn bytes(&self) -> f64 {
        16.0 * self.params + self.acts + self.data
    }
}

/// `[model] precision` (checked by the spec: `f32`, `bf16` or absent).
fn precision(p: Option<&str>) -> lopper_nn::Precision {
    match p {
        Some("bf16") => lopper_nn::Precision::Bf16,
        _ => lopper_nn::Precision::F32,
    }
}

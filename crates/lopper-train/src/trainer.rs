//! The training loop: [`Trainer`] owns a [`Model`], an [`Optimizer`], an [`LrSchedule`], a
//! [`DataSource`] and [`Callback`]s, and records a [`RunLog`], FLOPs, wall time and energy.
//!
//! One step ([`Trainer::step_once`]), for step index `s` (0-based) at `lr = schedule.lr(s)`:
//! 1. `batch = data.train_batch(s)`; callbacks' `before_step`;
//! 2. `zero_grad`, `forward` (loss), `backward`; callbacks' `after_backward`;
//! 3. FLOPs of this step from `model.flops(&batch)`, taken before `after_backward` (the kinds of
//!    this step: they change during a run, so every step is counted); the global gradient norm
//!    (when clipping or checking); with
//!    `grad_clip`: [`crate::clip_grad_norm`]'s scale through [`Optimizer::step_scaled`], else
//!    [`Optimizer::step`]. A non-finite loss or gradient norm skips the update and stops the run
//!    (reason in the log) unless `stop_on_nonfinite` is off;
//! 4. callbacks' `on_step_end` (any `Stop` stops the run after this step); the step counter moves
//!    to `s + 1`; a [`TrainPoint`] every `log_every` steps (and the first and last); progress.
//!
//! [`Trainer::run`] calls `on_begin`, then steps until `cfg.steps`; after step `s` (steps done
//! `s + 1`) it evaluates when `eval_every` divides `s + 1` (`before_eval`, evaluation,
//! [`EvalPoint`] in the log, `on_eval`), then serves callbacks' checkpoint requests; at the end an
//! evaluation if `eval_at_end` and none was just made, and `on_end`. Evaluation
//! ([`Trainer::evaluate`]) is the example-weighted mean loss over `data.val_batches()` and, for
//! feature batches, accuracy.
//!
//! Time: `train_wall_s` sums the steps only (evaluation and checkpoint saves excluded) and is
//! carried across a resume; `RunSummary::wall_s` is the wall time of this `run` call.
//!
//! Energy: `run` meters training and evaluation in separate windows of the
//! [`EnergyMeter`] set by [`Trainer::set_energy_meter`] (phases `train` and `eval` of the
//! [`EnergyReport`]). Without one it uses an [`EstimateMeter`] (CPU-seconds x
//! `estimate_watts_per_core`) and says so in an [`crate::Event`]. A window shorter than a counter
//! allows (NVML's minimum) is not metered and an event says so.
use crate::callback::{Callback, Control, Ctx, EvalResult};
use crate::data::DataSource;
use crate::log::{EvalPoint, RunLog, TrainPoint};
use crate::lr::LrSchedule;
use crate::model::{Batch, Model, accuracy};
use crate::optim::{Optimizer, clip_scale, grad_norm};
use crate::{Result, invalid};
use lopper_energy::{EnergyMeter, EnergyReport, EstimateMeter, Factors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run does (serde: every key optional, defaults below).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Total optimizer steps of the run (a resumed run continues up to this).
    pub steps: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Log a [`TrainPoint`] every this many steps (the first and last always; 0 counts as 1).
    pub log_every: u64,
    /// Clip gradients to this global 2-norm (PyTorch `clip_grad_norm_`).
    pub grad_clip: Option<f32>,
    /// Evaluate after the last step (unless that step was just evaluated).
    pub eval_at_end: bool,
    /// Stop the run (skipping the update) when the training loss or the gradient norm is NaN or
    /// infinite (costs one pass over the gradients per step).
    pub stop_on_nonfinite: bool,
    /// Watts per core of the estimate used when no energy meter is set.
    pub estimate_watts_per_core: f64,
    /// CO2 and cost factors of the energy report.
    pub energy_factors: Factors,
}

impl Default for TrainConfig {
    /// 1000 steps, eval every 100, log every 10, no clipping, eval at the end, stop on NaN,
    /// 10 W per core for the fallback estimate.
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            eval_every: 100,
            log_every: 10,
            grad_clip: None,
            eval_at_end: true,
            stop_on_nonfinite: true,
            estimate_watts_per_core: 10.0,
            energy_factors: Factors::default(),
        }
    }
}

/// What the progress hook sees after every step and evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps of the run.
    pub total: u64,
    /// Training loss of the last step.
    pub loss: f32,
    /// Learning rate of the last step.
    pub lr: f32,
    /// Global gradient norm of the last step (when clipping or checking for non-finite values).
    pub grad_norm: Option<f32>,
    /// Tokens (or examples) per second of training so far.
    pub examples_per_s: f64,
    /// Seconds of training so far (evaluation excluded).
    pub train_wall_s: f64,
    /// The evaluation just made, if this report follows one.
    pub eval: Option<EvalResult>,
}

/// A progress hook (e.g. drives an indicatif bar).
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// What a run produced (JSON for reports).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Steps done (the step counter at the end).
    pub steps: u64,
    /// Validation loss of the last evaluation (of the whole run, resumes included).
    pub final_val_loss: Option<f64>,
    /// Lowest validation loss of any evaluation.
    pub best_val_loss: Option<f64>,
    /// Accuracy of the last evaluation (classifiers).
    pub accuracy: Option<f64>,
    /// Wall time of this `run` call (training, evaluation, checkpoints).
    pub wall_s: f64,
    /// Training time of the whole run (evaluation excluded, resumes included).
    pub train_wall_s: f64,
    /// Evaluation time of the whole run.
    pub eval_wall_s: f64,
    /// Training tokens (or examples) per second of `train_wall_s`.
    pub tokens_or_examples_per_s: f64,
    /// Steady-state throughput: the median over this trainer's steps, after the first
    /// [`STEADY_WARMUP_STEPS`], of each step's tokens (or examples) per second; None with no step
    /// past the warm-up. The figure PyTorch benchmarks report (median step after warm-up).
    pub steady_per_s: Option<f64>,
    /// Executed training FLOPs (forward + backward) of the whole run.
    pub flops_executed: u64,
    /// Dense-equivalent training FLOPs of the whole run.
    pub flops_dense_equivalent: u64,
    /// Energy by phase (`train`, `eval`) and total.
    pub energy: EnergyReport,
    /// Why the run stopped before `steps`, if it did.
    pub stopped_early: Option<String>,
}

/// Run-wide counters (carried across a resume by the checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Executed training FLOPs so far.
    pub flops_executed: u64,
    /// Dense-equivalent training FLOPs so far.
    pub flops_dense_equivalent: u64,
    /// Training tokens or examples seen.
    pub examples: u64,
    /// Seconds of training (steps only).
    pub train_wall_s: f64,
    /// Seconds of evaluation.
    pub eval_wall_s: f64,
}

/// The training loop (see the module doc for the order of everything).
pub struct Trainer {
    pub(crate) model: Box<dyn Model>,
    pub(crate) optimizer: Box<dyn Optimizer>,
    pub(crate) schedule: Box<dyn LrSchedule>,
    pub(crate) data: Box<dyn DataSource>,
    pub(crate) callbacks: Vec<Box<dyn Callback>>,
    pub(crate) cfg: TrainConfig,
    pub(crate) log: RunLog,
    pub(crate) step: u64,
    pub(crate) counters: Counters,
    pub(crate) energy: EnergyReport,
    meter: Option<Box<dyn EnergyMeter>>,
    /// The phase whose energy window is open.
    window: Option<&'static str>,
    progress: Option<ProgressFn>,
    recipe_hash: Option<String>,
    stop_reason: Option<String>,
    last_grad_norm: Option<f32>,
    /// Examples per second of each step taken since this trainer was built or resumed.
    step_rates: Vec<f64>,
}

/// Steps at the start of a run left out of [`RunSummary::steady_per_s`] (buffers are allocated and
/// first touched, caches and branch predictors warm up): as PyTorch benchmarks usually do, and as
/// `../shared/peers/peer_bench.py` does.
pub const STEADY_WARMUP_STEPS: usize = 4;

impl Trainer {
    /// A trainer at step 0 with an empty log.
    pub fn new(
        model: Box<dyn Model>,
        optimizer: Box<dyn Optimizer>,
        schedule: Box<dyn LrSchedule>,
        data: Box<dyn DataSource>,
        cfg: TrainConfig,
    ) -> Trainer {
        let energy = EnergyReport::new(cfg.energy_factors.clone());
        Trainer {
            model,
            optimizer,
            schedule,
            data,
            callbacks: Vec::new(),
            cfg,
            log: RunLog::default(),
            step: 0,
            counters: Counters::default(),
            energy,
            meter: None,
            window: None,
            progress: None,
            recipe_hash: None,
            stop_reason: None,
            last_grad_norm: None,
            step_rates: Vec::new(),
        }
    }

    /// Adds a callback (hooks run in the order added). Names must be unique (checkpoints key
    /// their states by name).
    pub fn add_callback(&mut self, cb: Box<dyn Callback>) {
        self.callbacks.push(cb);
    }
    /// The callbacks' names, in order.
    pub fn callback_names(&self) -> Vec<String> {
        self.callbacks.iter().map(|c| c.name()).collect()
    }
    /// Meters energy with `meter` (see [`lopper_energy::best_available_cpu`]).
    pub fn set_energy_meter(&mut self, meter: Box<dyn EnergyMeter>) {
        self.meter = Some(meter);
    }
    /// Calls `f` after every step and evaluation.
    pub fn set_progress(&mut self, f: ProgressFn) {
        self.progress = Some(f);
    }
    /// The recipe hash written into the checkpoints this trainer saves.
    pub fn set_recipe_hash(&mut self, hash: Option<String>) {
        self.recipe_hash = hash;
    }
    /// The recipe hash, if set.
    pub fn recipe_hash(&self) -> Option<&str> {
        self.recipe_hash.as_deref()
    }
    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }
    /// The model, mutable (e.g. to change layer kinds before training).
    pub fn model_mut(&mut self) -> &mut dyn Model {
        self.model.as_mut()
    }
    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }
    /// The optimizer, mutable.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }
    /// The schedule.
    pub fn schedule(&self) -> &dyn LrSchedule {
        self.schedule.as_ref()
    }
    /// The data source.
    pub fn data(&self) -> &dyn DataSource {
        self.data.as_ref()
    }
    /// The run's record.
    pub fn log(&self) -> &RunLog {
        &self.log
    }
    /// The run's record, mutable (e.g. to add events).
    pub fn log_mut(&mut self) -> &mut RunLog {
        &mut self.log
    }
    /// Steps done (the index of the next step).
    pub fn step(&self) -> u64 {
        self.step
    }
    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// The configuration, mutable (e.g. more steps before another `run`).
    pub fn config_mut(&mut self) -> &mut TrainConfig {
        &mut self.cfg
    }
    /// FLOPs, examples and time so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Energy so far.
    pub fn energy(&self) -> &EnergyReport {
        &self.energy
    }

    /// Saves a checkpoint into `dir` (see [`crate::checkpoint::save`]); returns its manifest.
    pub fn save_checkpoint(&mut self, dir: &Path) -> Result<PathBuf> {
        let hash = self.recipe_hash.clone();
        crate::checkpoint::save(dir, self, hash.as_deref())
    }
    /// Restores this trainer (built as the saved one was: same model architecture, optimizer kind,
    /// callbacks) from a checkpoint directory or manifest (see [`crate::checkpoint::load`]).
    pub fn resume_from(&mut self, path: &Path) -> Result<()> {
        crate::checkpoint::load(path, self)
    }

    /// Runs `f` on every callback with a [`Ctx`]; the first callback to ask `Stop` gives the
    /// reason (its latest event, if it logged one in this hook).
    fn each_cb<F>(&mut self, step: u64, lr: f32, loss: f32, mut f: F) -> Result<Control>
    where
        F: FnMut(&mut dyn Callback, &mut Ctx<'_>) -> Result<Control>,
    {
        let mut ctx = Ctx {
            step,
            total_steps: self.cfg.steps,
            model: self.model.as_mut(),
            optimizer: self.optimizer.as_mut(),
            lr,
            loss,
            log: &mut self.log,
        };
        let mut out = Control::Continue;
        for cb in self.callbacks.iter_mut() {
            let before = ctx.log.events.len();
            if f(cb.as_mut(), &mut ctx)? == Control::Stop {
                out = Control::Stop;
                if self.stop_reason.is_none() {
                    let name = cb.name();
                    let why = ctx.log.events[before..]
                        .iter()
                        .rev()
                        .find(|e| e.source == name)
                        .map(|e| format!(": {}", e.message))
                        .unwrap_or_default();
                    self.stop_reason = Some(format!("{name} stopped the run{why}"));
                }
            }
        }
        Ok(out)
    }

    fn report_progress(&mut self, loss: f32, lr: f32, eval: Option<EvalResult>) {
        if let Some(p) = &mut self.progress {
            let c = &self.counters;
            p(&Progress {
                step: self.step,
                total: self.cfg.steps,
                loss,
                lr,
                grad_norm: self.last_grad_norm,
                examples_per_s: per_s(c.examples, c.train_wall_s),
                train_wall_s: c.train_wall_s,
                eval,
            });
        }
    }

    /// One training step at the current step index (see the module doc). Returns `Stop` when a
    /// callback asked to stop or the loss was not finite (the reason goes to the log). Energy
    /// windows and checkpoints are `run`'s, not this method's; `on_begin`/`on_end` too.
    pub fn step_once(&mut self) -> Result<Control> {
        let step = self.step;
        let lr = self.schedule.lr(step);
        let t0 = Instant::now();
        let batch = self.data.train_batch(step)?;
        let mut ctl = self.each_cb(step, lr, f32::NAN, |cb, ctx| {
            cb.before_step(ctx).map(|_| Control::Continue)
        })?;
        self.model.zero_grad();
        let loss = self.model.forward(&batch)?;
        self.model.backward()?;
        // counted before `after_backward`, while layers still say what this step's backward did
        // (e.g. a dense gradient for RigL's growth)
        let flops = self.model.flops(&batch).total();
        self.each_cb(step, lr, loss, |cb, ctx| {
            cb.after_backward(ctx).map(|_| Control::Continue)
        })?;
        let mut params = self.model.params();
        let check = self.cfg.stop_on_nonfinite;
        let norm = (check || self.cfg.grad_clip.is_some()).then(|| grad_norm(&params) as f32);
        self.last_grad_norm = norm;
        let bad = if !check {
            None
        } else if !loss.is_finite() {
            Some(format!(
                "training loss is {loss} at step {step}: update skipped"
            ))
        } else {
            norm.filter(|n| !n.is_finite()).map(|n| {
                format!("gradient norm is {n} at step {step} (loss {loss}): update skipped")
            })
        };
        if let Some(why) = bad {
            drop(params);
            ctl = Control::Stop;
            self.log.event(step, "trainer", why.clone());
            self.stop_reason.get_or_insert(why);
        } else {
            match (self.cfg.grad_clip, norm) {
                (Some(max), Some(n)) => {
                    let scale = clip_scale(n, max);
                    self.optimizer.step_scaled(&mut params, lr, scale)?;
                }
                _ => self.optimizer.step(&mut params, lr)?,
            }
        }
        self.counters.flops_executed += flops.executed;
        self.counters.flops_dense_equivalent += flops.dense;
        if self.window.is_some()
            && let Some(m) = &mut self.meter
        {
            m.add_flops(flops.executed);
            m.poll()?; // wrapping counters (RAPL) must be sampled within their period
        }
        if self.each_cb(step, lr, loss, |cb, ctx| cb.on_step_end(ctx))? == Control::Stop {
            ctl = Control::Stop;
        }
        self.counters.examples += batch.examples() as u64;
        let secs = t0.elapsed().as_secs_f64();
        self.counters.train_wall_s += secs;
        self.step_rates.push(per_s(batch.examples() as u64, secs));
        self.step = step + 1;
        let every = self.cfg.log_every.max(1);
        if step.is_multiple_of(every) || self.step == self.cfg.steps || ctl == Control::Stop {
            self.log.train.push(TrainPoint {
                step,
                loss: loss as f64,
                lr: lr as f64,
                wall_s: self.counters.train_wall_s,
            });
        }
        self.report_progress(loss, lr, None);
        Ok(ctl)
    }

    /// Evaluates the model on the validation batches: the mean loss weighted by each batch's
    /// examples and, when every batch is a feature batch, the accuracy. No callbacks, no log:
    /// `run` wraps it. `step` of the result is the steps done.
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        let batches = self.data.val_batches()?;
        if batches.is_empty() {
            return Err(invalid(
                "evaluate",
                format!(
                    "the data source has no validation batches ({})",
                    self.data.describe()
                ),
            ));
        }
        let (mut loss, mut n, mut hits, mut features) = (0.0f64, 0usize, 0.0f64, true);
        for b in &batches {
            let l = self.model.forward(b)? as f64;
            let e = b.examples();
            loss += l * e as f64;
            n += e;
            match b {
                Batch::Features { targets, .. } if !targets.is_empty() => {
                    let logits = self.model.logits();
                    let classes = logits.len() / targets.len();
                    hits += accuracy(logits, targets, classes) * targets.len() as f64;
                }
                Batch::Features { .. } => {}
                Batch::Tokens { .. } => features = false,
            }
        }
        if n == 0 {
            return Err(invalid(
                "evaluate",
                "the validation batches hold no examples",
            ));
        }
        Ok(EvalResult {
            step: self.step,
            val_loss: loss / n as f64,
            accuracy: features.then(|| hits / n as f64),
        })
    }

    /// Opens an energy window for `phase`.
    fn open_window(&mut self, phase: &'static str) -> Result<()> {
        if let Some(m) = &mut self.meter {
            m.start()?;
            self.window = Some(phase);
        }
        Ok(())
    }

    /// Closes the open window into the report. A window too short for the counter is reported
    /// in an event and not metered; other meter errors are errors.
    fn close_window(&mut self) -> Result<()> {
        let (Some(phase), Some(m)) = (self.window.take(), &mut self.meter) else {
            return Ok(());
        };
        match m.stop() {
            Ok(meas) => self.energy.add(phase, &meas),
            Err(e @ lopper_energy::Error::WindowTooShort { .. }) => {
                self.log.event(
                    self.step,
                    "energy",
                    format!("{phase} window not metered: {e}"),
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Evaluation inside `run`: hooks, a separate energy window, the log, progress; reopens the
    /// training window when `reopen`.
    fn eval_phase(&mut self, reopen: bool) -> Result<Control> {
        let step = self.step;
        let lr = self.schedule.lr(step.saturating_sub(1));
        self.each_cb(step, lr, f32::NAN, |cb, ctx| {
            cb.before_eval(ctx).map(|_| Control::Continue)
        })?;
        self.close_window()?;
        self.open_window("eval")?;
        let t = Instant::now();
        let r = self.evaluate();
        self.counters.eval_wall_s += t.elapsed().as_secs_f64();
        self.close_window()?;
        let r = r?;
        let train = self.energy.phase("train");
        self.log.evals.push(EvalPoint {
            step,
            val_loss: r.val_loss,
            accuracy: r.accuracy,
            wall_s: self.counters.train_wall_s,
            energy_j: train.map_or(0.0, |p| p.joules.value),
            energy_method: train.map_or("none".into(), |p| p.joules.method.label().into()),
            flops_executed: self.counters.flops_executed,
            flops_dense_equivalent: self.counters.flops_dense_equivalent,
        });
        let ctl = self.each_cb(step, lr, f32::NAN, |cb, ctx| cb.on_eval(ctx, &r))?;
        let loss = self.log.train.last().map_or(f32::NAN, |p| p.loss as f32);
        self.report_progress(loss, lr, Some(r));
        if reopen {
            self.open_window("train")?;
        }
        Ok(ctl)
    }

    /// Saves the checkpoints callbacks ask for now.
    fn serve_checkpoints(&mut self) -> Result<()> {
        let steps = self.step;
        let asks: Vec<(usize, PathBuf)> = self
            .callbacks
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.checkpoint_request(steps).map(|d| (i, d)))
            .collect();
        for (i, dir) in asks {
            let path = self.save_checkpoint(&dir)?;
            let lr = self.schedule.lr(steps.saturating_sub(1));
            let mut ctx = Ctx {
                step: steps,
                total_steps: self.cfg.steps,
                model: self.model.as_mut(),
                optimizer: self.optimizer.as_mut(),
                lr,
                loss: f32::NAN,
                log: &mut self.log,
            };
            self.callbacks[i].on_checkpoint(&mut ctx, &path)?;
        }
        Ok(())
    }

    fn ensure_meter(&mut self) -> Result<()> {
        if self.meter.is_none() {
            let m = EstimateMeter::cpu_time(self.cfg.estimate_watts_per_core)?;
            self.log.event(
                self.step,
                "energy",
                format!("no energy meter set: using an ESTIMATE, {}", m.describe()),
            );
            self.meter = Some(Box::new(m));
        }
        Ok(())
    }

    /// Trains from the current step up to `cfg.steps` (see the module doc), evaluating and
    /// checkpointing as configured. On an error the open energy window is closed (its energy
    /// kept when the meter allows) and the error returned. Called from a thread outside rayon's
    /// pools, the loop runs on a thread of the global pool (this thread waits), so that each
    /// parallel kernel starts from inside the pool; a loop of your own around
    /// [`Trainer::step_once`] gains the same inside `ThreadPool::install` (see `Par`'s docs).
    pub fn run(&mut self) -> Result<RunSummary> {
        let t0 = Instant::now();
        self.stop_reason = None;
        self.ensure_meter()?;
        // called from outside rayon's pools, the loop moves to a thread of the global pool: each
        // parallel region of a step then starts there, where from outside it would be handed to
        // the pool while this thread slept (12-17 us per region; the GPT's 240 steps ran at
        // 18,200-18,300 tok/s from outside, 19,500-20,200 moved, 2026-11-30)
        let r = if rayon::current_thread_index().is_none() {
            rayon::scope(|_| self.run_inner())
        } else {
            self.run_inner()
        };
        if self.window.is_some() {
            let closed = self.close_window();
            if r.is_ok() {
                closed?;
            }
        }
        r?;
        let evals = &self.log.evals;
        let last = evals.last();
        let best = evals
            .iter()
            .map(|e| e.val_loss)
            .filter(|x| !x.is_nan())
            .reduce(f64::min);
        let c = &self.counters;
        Ok(RunSummary {
            steps: self.step,
            final_val_loss: last.map(|e| e.val_loss),
            best_val_loss: best,
            accuracy: last.and_then(|e| e.accuracy),
            wall_s: t0.elapsed().as_secs_f64(),
            train_wall_s: c.train_wall_s,
            eval_wall_s: c.eval_wall_s,
            tokens_or_examples_per_s: per_s(c.examples, c.train_wall_s),
            steady_per_s: median(self.step_rates.get(STEADY_WARMUP_STEPS..).unwrap_or(&[])),
            flops_executed: c.flops_executed,
            flops_dense_equivalent: c.flops_dense_equivalent,
            energy: self.energy.clone(),
            stopped_early: self.stop_reason.clone(),
        })
    }

    fn run_inner(&mut self) -> Result<()> {
        let lr0 = self.schedule.lr(self.step);
        self.each_cb(self.step, lr0, f32::NAN, |cb, ctx| {
            cb.on_begin(ctx).map(|_| Control::Continue)
        })?;
        self.open_window("train")?;
        while self.step < self.cfg.steps {
            let mut ctl = self.step_once()?;
            let e = self.cfg.eval_every;
            if e > 0 && self.step.is_multiple_of(e) && self.eval_phase(true)? == Control::Stop {
                ctl = Control::Stop;
            }
            self.serve_checkpoints()?;
            if ctl == Control::Stop {
                let why = self
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| "a callback asked to stop".into());
                self.stop_reason = Some(why.clone());
                self.log.event(
                    self.step,
                    "trainer",
                    format!(
                        "stopped early after {} of {} steps: {why}",
                        self.step, self.cfg.steps
                    ),
                );
                break;
            }
        }
        let evaluated = self.log.evals.last().is_some_and(|e| e.step == self.step);
        if self.cfg.eval_at_end && !evaluated {
            self.eval_phase(false)?;
        }
        self.close_window()?;
        let lr = self.schedule.lr(self.step.saturating_sub(1));
        self.each_cb(self.step, lr, f32::NAN, |cb, ctx| {
            cb.on_end(ctx).map(|_| Control::Continue)
        })?;
        Ok(())
    }
}

/// The median of `v` (mean of the middle two for an even length); None when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(0.5 * (v[n / 2 - 1] + v[n / 2])),
    }
}

fn per_s(n: u64, s: f64) -> f64 {
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // one slow step (an evaluation, a page-fault storm) does not move it
        assert_eq!(median(&[10.0, 10.0, 0.5, 10.0, 10.0]), Some(10.0));
    }
}

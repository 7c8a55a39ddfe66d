//! Callbacks: everything around the step that is not the step (compression stages, evaluation,
//! early stopping, checkpoints, energy metering, progress). The trainer calls, in order, per step:
//! `before_step`, (zero_grad, forward, backward), `after_backward`, (optimizer step),
//! `on_step_end`; around evaluations `before_eval` and `on_eval`; then `checkpoint_request` (and
//! `on_checkpoint` after a save). `on_begin` and `on_end` bracket each `Trainer::run`.
use crate::log::RunLog;
use crate::optim::Optimizer;
use crate::{Model, Result};
use std::collections::BTreeMap;

/// What a callback sees: the model, the optimizer and the run so far.
pub struct Ctx<'a> {
    /// The 0-based index of the current step (in `on_step_end`: the step just done).
    pub step: u64,
    /// Steps the run will take in all.
    pub total_steps: u64,
    /// The model being trained.
    pub model: &'a mut dyn Model,
    /// The optimizer (call `remap` after changing a layer's layout).
    pub optimizer: &'a mut dyn Optimizer,
    /// Learning rate of the current step.
    pub lr: f32,
    /// Training loss of the current step (NaN before the forward).
    pub loss: f32,
    /// The run's record, for events.
    pub log: &'a mut RunLog,
}

/// Whether to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step (early stopping); the reason goes to the log.
    Stop,
}

/// The result of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Steps done when evaluated.
    pub step: u64,
    /// Mean validation loss (weighted by examples).
    pub val_loss: f64,
    /// Accuracy, for feature (classifier) batches.
    pub accuracy: Option<f64>,
}

/// A callback's state for a checkpoint (so that `--resume` continues exactly).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallbackState {
    /// Named tensors (saved as `cb.{name}.{key}`).
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// Everything else, as JSON (in the manifest).
    pub json: serde_json::Value,
}

/// A callback. Every hook has a default that does nothing.
pub trait Callback: Send {
    /// Short unique name (keys its checkpoint state and its events).
    fn name(&self) -> String;
    /// Once, before the first step (also after a resume, before the first resumed step).
    fn on_begin(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    /// Before the step's forward (e.g. ask a layer for its dense gradient this step).
    fn before_step(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    /// After the backward, before the optimizer step: gradients are fresh.
    fn after_backward(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    /// After the optimizer step.
    fn on_step_end(&mut self, _ctx: &mut Ctx<'_>) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// Before an evaluation (e.g. close the training energy window).
    fn before_eval(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    /// After an evaluation.
    fn on_eval(&mut self, _ctx: &mut Ctx<'_>, _eval: &EvalResult) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// Once, after the last step.
    fn on_end(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    /// Asked by `Trainer::run` after each step's `on_step_end` and evaluation (the step counter
    /// already counts the step just done, `steps_done`): a directory to save a checkpoint into
    /// now, or `None` (the default). The trainer saves, since only it sees every part of the run
    /// (optimizer, all callbacks, counters), then calls [`Callback::on_checkpoint`].
    fn checkpoint_request(&mut self, _steps_done: u64) -> Option<std::path::PathBuf> {
        None
    }
    /// After the checkpoint this callback asked for was saved; `path` is its manifest.
    fn on_checkpoint(&mut self, _ctx: &mut Ctx<'_>, _path: &std::path::Path) -> Result<()> {
        Ok(())
    }
    /// State for a checkpoint.
    fn state(&self) -> CallbackState {
        CallbackState::default()
    }
    /// Restores a state saved by [`Callback::state`].
    fn load_state(&mut self, _state: &CallbackState) -> Result<()> {
        Ok(())
    }
}

//! What a run records: training losses, evaluations and events, with wall time, FLOPs and
//! energy, so that reports and plots can be made from it. Serializable (JSON).
use serde::{Deserialize, Serialize};

/// One logged training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPoint {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Seconds of training (evaluation excluded) since the run began.
    pub wall_s: f64,
}

/// One evaluation on the validation batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub val_loss: f64,
    /// For classifiers.
    pub accuracy: Option<f64>,
    /// Seconds of training (evaluation excluded) since the run began.
    pub wall_s: f64,
    /// Training energy so far (joules), by `energy_method`.
    pub energy_j: f64,
    pub energy_method: String,
    /// Executed and dense-equivalent training FLOPs so far.
    pub flops_executed: u64,
    pub flops_dense_equivalent: u64,
}

/// Something that happened: a layer switched kind, a pruning step, a RigL update, a fallback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub step: u64,
    /// Who says it (callback or component name).
    pub source: String,
    pub message: String,
}

/// The record of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLog {
    pub train: Vec<TrainPoint>,
    pub evals: Vec<EvalPoint>,
    pub events: Vec<Event>,
}

impl RunLog {
    /// Records an event.
    pub fn event(&mut self, step: u64, source: impl Into<String>, message: impl Into<String>) {
        self.events.push(Event {
            step,
            source: source.into(),
            message: message.into(),
        });
    }
}

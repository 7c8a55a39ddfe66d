//! lopper-train: training composed through small traits.
//!
//! - [`Model`] ([`model`]): forward with loss, backward, parameters, Linear layers by name, FLOPs;
//!   implemented for lopper-nn's `Gpt` and `Mlp`.
//! - [`Optimizer`] ([`optim`]): SGD with momentum and AdamW, updating only stored values of sparse
//!   weights and keeping masks true; state keyed by parameter name and remapped when a layer's
//!   pattern changes.
//! - [`LrSchedule`] ([`lr`]): constant, linear warmup then cosine or linear decay.
//! - [`Callback`] ([`callback`]): compression stages, evaluation, early stopping, checkpoints,
//!   energy metering, progress.
//! - [`data`]: [`DataSource`] and loaders (byte text, UCI digits, IDX).
//! - [`RunLog`] ([`log`]): what a run records, for reports.
//!
//! Nothing here knows the command line; recipes are parsed here because they describe a training.

pub mod callback;
pub mod callbacks;
pub mod checkpoint;
pub mod compress;
pub mod data;
mod error;
pub mod log;
pub mod lr;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod trainer;

pub use callback::{Callback, CallbackState, Control, Ctx, EvalResult};
pub use callbacks::{Checkpointing, EarlyStopping};
pub use data::{DataError, DataSource};
pub use error::{Error, Result, invalid, io};
pub use log::{EvalPoint, Event, RunLog, TrainPoint};
pub use lr::{Constant, LrSchedule, WarmupCosine, WarmupLinear};
pub use model::{Batch, Model, accuracy};
pub use optim::{AdamW, AdamWConfig, OptimState, Optimizer, Sgd, SgdConfig, clip_grad_norm};
pub use trainer::{Progress, RunSummary, STEADY_WARMUP_STEPS, TrainConfig, Trainer};

//! Built-in callbacks: [`EarlyStopping`] on the validation loss and [`Checkpointing`] every N
//! steps with pruning of old checkpoints. (Progress and energy metering live in the trainer.)
use crate::callback::{Callback, CallbackState, Control, Ctx, EvalResult};
use crate::{Result, invalid};
use std::path::{Path, PathBuf};

/// Stops the run when the validation loss has not improved by more than `min_delta` for
/// `patience` evaluations in a row (a NaN loss never improves). The reason goes to the log.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping (at least 1).
    pub patience: u64,
    /// Improvement needed: `loss < best - min_delta`.
    pub min_delta: f64,
    best: f64,
    bad: u64,
}

impl EarlyStopping {
    /// Early stopping after `patience` (>= 1) evaluations without an improvement of more than
    /// `min_delta` (finite, >= 0).
    pub fn new(patience: u64, min_delta: f64) -> Result<EarlyStopping> {
        if patience == 0 || !(min_delta.is_finite() && min_delta >= 0.0) {
            return Err(invalid(
                "early_stopping",
                format!("patience {patience} must be >= 1 and min_delta {min_delta} >= 0"),
            ));
        }
        Ok(EarlyStopping {
            patience,
            min_delta,
            best: f64::INFINITY,
            bad: 0,
        })
    }
    /// The best validation loss seen (infinity before the first evaluation).
    pub fn best(&self) -> f64 {
        self.best
    }
    /// Evaluations in a row without improvement.
    pub fn bad_evals(&self) -> u64 {
        self.bad
    }
}

impl Callback for EarlyStopping {
    fn name(&self) -> String {
        "early_stopping".into()
    }
    fn on_eval(&mut self, ctx: &mut Ctx<'_>, eval: &EvalResult) -> Result<Control> {
        if eval.val_loss < self.best - self.min_delta {
            self.best = eval.val_loss;
            self.bad = 0;
            return Ok(Control::Continue);
        }
        self.bad += 1;
        if self.bad < self.patience {
            return Ok(Control::Continue);
        }
        ctx.log.event(
            eval.step,
            self.name(),
            format!(
                "validation loss {} did not improve on {} by more than {} in {} evaluations",
                eval.val_loss, self.best, self.min_delta, self.patience
            ),
        );
        Ok(Control::Stop)
    }
    fn state(&self) -> CallbackState {
        CallbackState {
            tensors: Default::default(),
            json: serde_json::json!({
                "best": self.best.to_string(),
                "best_bits": self.best.to_bits(),
                "bad": self.bad,
            }),
        }
    }
    fn load_state(&mut self, st: &CallbackState) -> Result<()> {
        let key = |k: &str| {
            st.json
                .get(k)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| invalid("early_stopping state", format!("key {k} missing")))
        };
        self.best = f64::from_bits(key("best_bits")?);
        self.bad = key("bad")?;
        Ok(())
    }
}

/// Saves a checkpoint every `every` steps, and after the run's last step, into
/// `{dir}/step-{steps:08}` (the trainer saves it, see [`Callback::checkpoint_request`]) and keeps
/// the newest `keep_last` of the checkpoints this instance saved (0: all). Checkpoints already in
/// `dir` (an earlier run, or the one a run resumed from) are never removed.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpointing {
    /// Folder of the `step-XXXXXXXX` checkpoint directories.
    pub dir: PathBuf,
    /// Steps between checkpoints (at least 1).
    pub every: u64,
    /// How many checkpoints to keep (0: all).
    pub keep_last: usize,
    /// The run's total steps, seen at `on_begin`.
    total: u64,
    /// The checkpoints this instance saved, oldest first (the only ones it removes).
    saved: Vec<PathBuf>,
}

impl Checkpointing {
    /// Checkpoints into `dir` every `every` (>= 1) steps, keeping the newest `keep_last`.
    pub fn new(dir: impl Into<PathBuf>, every: u64, keep_last: usize) -> Result<Checkpointing> {
        if every == 0 {
            return Err(invalid("checkpointing", "every must be >= 1"));
        }
        Ok(Checkpointing {
            dir: dir.into(),
            every,
            keep_last,
            total: 0,
            saved: Vec::new(),
        })
    }

    /// The checkpoint directories under `dir` (`step-XXXXXXXX` holding a manifest), oldest first.
    pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                let p = e.path();
                p.join(crate::checkpoint::MANIFEST)
                    .is_file()
                    .then_some((step, p))
            })
            .collect();
        out.sort();
        out
    }

    /// The newest checkpoint under `dir`, if any (for `--resume`).
    pub fn latest(dir: &Path) -> Option<PathBuf> {
        Self::list(dir).pop().map(|(_, p)| p)
    }
}

impl Callback for Checkpointing {
    fn name(&self) -> String {
        "checkpointing".into()
    }
    fn on_begin(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.total = ctx.total_steps;
        Ok(())
    }
    fn checkpoint_request(&mut self, steps_done: u64) -> Option<PathBuf> {
        let due = steps_done.is_multiple_of(self.every) || steps_done == self.total;
        (steps_done > 0 && due).then(|| self.dir.join(format!("step-{steps_done:08}")))
    }
    fn on_checkpoint(&mut self, ctx: &mut Ctx<'_>, path: &Path) -> Result<()> {
        ctx.log
            .event(ctx.step, self.name(), format!("saved {}", path.display()));
        // `path` is the manifest: the checkpoint is the folder checkpoint_request named
        let dir = self.dir.join(format!("step-{:08}", ctx.step));
        if !self.saved.contains(&dir) {
            self.saved.push(dir);
        }
        if self.keep_last == 0 {
            return Ok(());
        }
        let drop = self.saved.len().saturating_sub(self.keep_last);
        let old: Vec<PathBuf> = self.saved.drain(..drop).collect();
        for p in old {
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| crate::io(&p, e))?;
            }
            ctx.log
                .event(ctx.step, self.name(), format!("removed {}", p.display()));
        }
        Ok(())
    }
}

//! Learning-rate schedules: a pure function of the step.

/// A learning-rate schedule.
pub trait LrSchedule: Send {
    /// The learning rate of optimizer step `step` (0-based).
    fn lr(&self, step: u64) -> f32;
    /// One line for logs (e.g. `cosine 3e-4 -> 3e-5, warmup 50 of 400`).
    fn describe(&self) -> String;
}

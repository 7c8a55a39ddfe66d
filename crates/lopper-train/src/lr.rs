//! Learning-rate schedules: a pure function of the step (so a resumed run gets the same rates).
//!
//! - [`Constant`]: `lr` at every step.
//! - [`WarmupCosine`]: linear warmup `base * (step + 1) / warmup` for `step < warmup`, then a
//!   half cosine from `base` down to `min`, reached at step `total` and kept after it.
//! - [`WarmupLinear`]: the same warmup, then a straight line from `base` to `min` at `total`.
//!
//! Arithmetic in f64, rounded to f32 once.
use crate::{Result, invalid};

/// A learning-rate schedule.
pub trait LrSchedule: Send {
    /// The learning rate of optimizer step `step` (0-based).
    fn lr(&self, step: u64) -> f32;
    /// One line for logs (e.g. `cosine 3e-4 -> 3e-5, warmup 50 of 400`).
    fn describe(&self) -> String;
}

/// The same learning rate at every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constant {
    /// The rate.
    pub lr: f32,
}

impl Constant {
    /// A constant rate (finite, >= 0).
    pub fn new(lr: f32) -> Result<Constant> {
        check_rate("constant", "lr", lr)?;
        Ok(Constant { lr })
    }
}

impl LrSchedule for Constant {
    fn lr(&self, _step: u64) -> f32 {
        self.lr
    }
    fn describe(&self) -> String {
        format!("constant {:e}", self.lr)
    }
}

fn check_rate(what: &str, key: &str, x: f32) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            format!("lr schedule {what}"),
            format!("{key} = {x} must be finite and >= 0"),
        ))
    }
}

fn check_shape(what: &str, base: f32, min: f32, warmup: u64, total: u64) -> Result<()> {
    check_rate(what, "base", base)?;
    check_rate(what, "min", min)?;
    if min > base {
        return Err(invalid(
            format!("lr schedule {what}"),
            format!("min {min} is above base {base}"),
        ));
    }
    if warmup > total {
        return Err(invalid(
            format!("lr schedule {what}"),
            format!("warmup {warmup} is longer than total {total}"),
        ));
    }
    Ok(())
}

/// `base * (step + 1) / warmup` during warmup, else `None`.
fn warmup_lr(base: f32, warmup: u64, step: u64) -> Option<f64> {
    (step < warmup).then(|| base as f64 * (step + 1) as f64 / warmup as f64)
}

/// Decay progress in [0, 1] after warmup.
fn progress(warmup: u64, total: u64, step: u64) -> f64 {
    if total <= warmup {
        return 1.0;
    }
    ((step - warmup) as f64 / (total - warmup) as f64).clamp(0.0, 1.0)
}

/// Linear warmup, then cosine decay to `min` at step `total` (kept after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Peak rate, reached at the end of warmup.
    pub base: f32,
    /// Warmup steps (0: none).
    pub warmup: u64,
    /// The step at which `min` is reached.
    pub total: u64,
    /// Final rate.
    pub min: f32,
}

impl WarmupCosine {
    /// Validated: rates finite and >= 0, `min <= base`, `warmup <= total`.
    pub fn new(base: f32, warmup: u64, total: u64, min: f32) -> Result<WarmupCosine> {
        check_shape("cosine", base, min, warmup, total)?;
        Ok(WarmupCosine {
            base,
            warmup,
            total,
            min,
        })
    }
}

impl LrSchedule for WarmupCosine {
    fn lr(&self, step: u64) -> f32 {
        if let Some(w) = warmup_lr(self.base, self.warmup, step) {
            return w as f32;
        }
        let p = progress(self.warmup, self.total, step);
        let (b, m) = (self.base as f64, self.min as f64);
        (m + 0.5 * (b - m) * (1.0 + (std::f64::consts::PI * p).cos())) as f32
    }
    fn describe(&self) -> String {
        format!(
            "cosine {:e} -> {:e}, warmup {} of {}",
            self.base, self.min, self.warmup, self.total
        )
    }
}

/// Linear warmup, then linear decay to `min` at step `total` (kept after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupLinear {
    /// Peak rate, reached at the end of warmup.
    pub base: f32,
    /// Warmup steps (0: none).
    pub warmup: u64,
    /// The step at which `min` is reached.
    pub total: u64,
    /// Final rate.
    pub min: f32,
}

impl WarmupLinear {
    /// Validated: rates finite and >= 0, `min <= base`, `warmup <= total`.
    pub fn new(base: f32, warmup: u64, total: u64, min: f32) -> Result<WarmupLinear> {
        check_shape("linear", base, min, warmup, total)?;
        Ok(WarmupLinear {
            base,
            warmup,
            total,
            min,
        })
    }
}

impl LrSchedule for WarmupLinear {
    fn lr(&self, step: u64) -> f32 {
        if let Some(w) = warmup_lr(self.base, self.warmup, step) {
            return w as f32;
        }
        let p = progress(self.warmup, self.total, step);
        let (b, m) = (self.base as f64, self.min as f64);
        (b + (m - b) * p) as f32
    }
    fn describe(&self) -> String {
        format!(
            "linear {:e} -> {:e}, warmup {} of {}",
            self.base, self.min, self.warmup, self.total
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant() {
        let c = Constant::new(0.1).unwrap();
        assert_eq!(c.lr(0), 0.1);
        assert_eq!(c.lr(1 << 40), 0.1);
        assert!(Constant::new(f32::NAN).is_err());
        assert!(Constant::new(-1.0).is_err());
    }

    #[test]
    fn warmup_cosine_points() {
        let s = WarmupCosine::new(1.0, 4, 14, 0.1).unwrap();
        // warmup: (step+1)/4
        for (st, want) in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0)] {
            assert!((s.lr(st) - want).abs() < 1e-7, "step {st}: {}", s.lr(st));
        }
        assert!((s.lr(4) - 1.0).abs() < 1e-7); // cosine start
        assert!((s.lr(9) - 0.55).abs() < 1e-6); // halfway: (1 + 0.1) / 2
        assert!((s.lr(14) - 0.1).abs() < 1e-7);
        assert!((s.lr(1000) - 0.1).abs() < 1e-7);
        // monotone after warmup
        for st in 4..20 {
            assert!(s.lr(st + 1) <= s.lr(st));
        }
        assert!(s.describe().contains("cosine"));
    }

    #[test]
    fn warmup_linear_points() {
        let s = WarmupLinear::new(2.0, 0, 10, 0.0).unwrap();
        assert_eq!(s.lr(0), 2.0);
        assert!((s.lr(5) - 1.0).abs() < 1e-7);
        assert_eq!(s.lr(10), 0.0);
        assert_eq!(s.lr(11), 0.0);
        let w = WarmupLinear::new(1.0, 10, 10, 0.5).unwrap();
        assert!((w.lr(9) - 1.0).abs() < 1e-7);
        assert_eq!(w.lr(10), 0.5);
    }

    #[test]
    fn bad_shapes() {
        assert!(WarmupCosine::new(1.0, 5, 4, 0.0).is_err());
        assert!(WarmupCosine::new(1.0, 0, 4, 2.0).is_err());
        assert!(WarmupLinear::new(f32::INFINITY, 0, 4, 0.0).is_err());
    }
}

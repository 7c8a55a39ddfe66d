//! Rank selection and per-layer compression reports.
//!
//! A rule picks r for a weight (M, N) from its singular values:
//! - `Fixed(r)`: r, clamped to min(M, N);
//! - `Energy(f)`: the smallest r with sum_{i<r} s_i^2 >= f * ||A||_F^2;
//! - `Ratio(p)`: the largest r with r (M + N) <= p M N, i.e. parameters (and the flops of
//!   `U (V X)`, which scale the same way) at most the fraction p of the dense layer's; at least 1.
use crate::lowrank::LowRank;
use crate::rsvd::{RsvdParams, rsvd};
use crate::svd::{Precision, Svd, rel_frobenius_error, svd};
use crate::{Error, Result};
use lopper_tensor::{MatRef, Par};
use std::fmt;

/// How to choose the rank of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    /// This rank (clamped to min(M, N)); must be >= 1.
    Fixed(usize),
    /// Keep singular values until this fraction of the squared Frobenius norm is reached; in (0, 1].
    Energy(f64),
    /// Parameters after / before at most this fraction; > 0.
    Ratio(f64),
}

impl RankRule {
    /// Checks the rule's argument range.
    pub fn validate(self) -> Result<RankRule> {
        match self {
            RankRule::Fixed(0) => Err(Error::invalid("RankRule", "rank must be at least 1")),
            RankRule::Energy(f) if !(f > 0.0 && f <= 1.0) => Err(Error::invalid(
                "RankRule",
                format!("energy fraction must be in (0, 1], got {f}"),
            )),
            RankRule::Ratio(p) if !(p > 0.0 && p.is_finite()) => Err(Error::invalid(
                "RankRule",
                format!("parameter ratio must be a positive number, got {p}"),
            )),
            r => Ok(r),
        }
    }
}

/// Which decomposition computes the factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Exact truncated SVD (faer, computed in f64): the Eckart-Young optimum.
    Svd,
    /// Randomized SVD in f32 with these tunables.
    Rsvd(RsvdParams),
}

/// The rank `rule` picks for an (rows, cols) matrix with singular values `s` (non-increasing; may be
/// only the leading ones) and squared Frobenius norm `total_sq`. Always in 1..=min(rows, cols)
/// (0 only for an empty matrix).
pub fn select_rank(
    s: &[f64],
    total_sq: f64,
    rows: usize,
    cols: usize,
    rule: RankRule,
) -> Result<usize> {
    let p = rows.min(cols);
    if p == 0 {
        return Ok(0);
    }
    let r = match rule.validate()? {
        RankRule::Fixed(r) => r,
        RankRule::Ratio(frac) => {
            let budget = frac * (rows as f64) * (cols as f64);
            (budget / (rows + cols) as f64).floor() as usize
        }
        RankRule::Energy(f) => {
            let target = f * total_sq;
            let mut acc = 0.0f64;
            let mut r = s.len().max(1);
            for (i, x) in s.iter().enumerate() {
                acc += x * x;
                // relative slack so that f = 1 is reached despite rounding in the sums
                if acc >= target * (1.0 - 1e-12) {
                    r = i + 1;
                    break;
                }
            }
            r
        }
    };
    Ok(r.clamp(1, p))
}

/// One layer's compression: what was chosen and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// Tensor name.
    pub name: String,
    /// Rows M.
    pub rows: usize,
    /// Columns N.
    pub cols: usize,
    /// Chosen rank r.
    pub rank: usize,
    /// Measured ||W - U V||_F / ||W||_F of the factors returned.
    pub rel_error: f64,
    /// M N.
    pub params_before: usize,
    /// r (M + N).
    pub params_after: usize,
}

impl fmt::Display for LayerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {}x{}  rank {}  rel_error {:.6e}  params {} -> {} ({:.1}%)",
            self.name,
            self.rows,
            self.cols,
            self.rank,
            self.rel_error,
            self.params_before,
            self.params_after,
            100.0 * self.params_after as f64 / self.params_before.max(1) as f64
        )
    }
}

/// A compressed layer: its factors, their dense product, and the report.
#[derive(Clone, Debug)]
pub struct Compressed {
    /// The factors U (M, r), V (r, N).
    pub factors: LowRank,
    /// U V, (M, N) row-major (what `--store dense` writes).
    pub dense: Vec<f32>,
    /// Rank, error, parameters.
    pub report: LayerReport,
}

fn sketch_for_energy(
    a: MatRef<'_>,
    f: f64,
    total_sq: f64,
    params: RsvdParams,
    par: Par,
) -> Result<Svd> {
    // grow the sketch until it captures the energy fraction (or covers the whole matrix)
    let p = a.rows().min(a.cols());
    let mut k = p.min(32);
    loop {
        let s = rsvd(a, k, params, par)?;
        let got: f64 = s.s.iter().map(|x| x * x).sum();
        if got >= f * total_sq * (1.0 - 1e-6) || k == p {
            return Ok(s);
        }
        k = (2 * k).min(p);
    }
}

/// Compresses one (M, N) matrix with `method`, the rank chosen by `rule`; the error in the report is
/// measured on the returned factors.
pub fn compress_matrix(
    name: &str,
    a: MatRef<'_>,
    method: Method,
    rule: RankRule,
    par: Par,
) -> Result<Compressed> {
    let rule = rule.validate()?;
    let (m, n) = (a.rows(), a.cols());
    if m == 0 || n == 0 {
        return Err(Error::invalid(
            "compress_matrix",
            format!("{name}: cannot factor an empty {m}x{n} matrix"),
        ));
    }
    let total_sq: f64 = a.data().iter().map(|&x| x as f64 * x as f64).sum();
    let dec = match method {
        Method::Svd => {
            let full = svd(a, Precision::F64, par)?;
            let r = select_rank(&full.s, total_sq, m, n, rule)?;
            full.truncate(r)?
        }
        Method::Rsvd(params) => match rule {
            RankRule::Energy(f) => {
                let s = sketch_for_energy(a, f, total_sq, params, par)?;
                let r = select_rank(&s.s, total_sq, m, n, rule)?;
                s.truncate(r)?
            }
            _ => {
                let r = select_rank(&[], total_sq, m, n, rule)?;
                rsvd(a, r, params, par)?
            }
        },
    };
    let factors = LowRank::from_svd(&dec)?;
    let dense = factors.to_dense(par)?;
    let rel_error = rel_frobenius_error(a.data(), &dense)?;
    let report = LayerReport {
        name: name.to_string(),
        rows: m,
        cols: n,
        rank: factors.rank(),
        rel_error,
        params_before: m * n,
        params_after: factors.params(),
    };
    Ok(Compressed {
        factors,
        dense,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::optimal_rel_error;
    use crate::testutil::*;
    use proptest::prelude::*;

    #[test]
    fn rules_pick_the_documented_rank() {
        let s = [4.0, 2.0, 1.0, 1.0];
        let tot: f64 = s.iter().map(|x| x * x).sum(); // 22
        assert_eq!(select_rank(&s, tot, 4, 4, RankRule::Fixed(2)).unwrap(), 2);
        assert_eq!(select_rank(&s, tot, 4, 4, RankRule::Fixed(99)).unwrap(), 4);
        assert_eq!(
            select_rank(&s, tot, 4, 4, RankRule::Energy(16.0 / 22.0)).unwrap(),
            1
        );
        assert_eq!(
            select_rank(&s, tot, 4, 4, RankRule::Energy(0.8)).unwrap(),
            2
        );
        assert_eq!(
            select_rank(&s, tot, 4, 4, RankRule::Energy(1.0)).unwrap(),
            4
        );
        // 100x300: r (400) <= 0.1 * 30000 -> r = 7
        assert_eq!(
            select_rank(&[], 0.0, 100, 300, RankRule::Ratio(0.1)).unwrap(),
            7
        );
        assert_eq!(
            select_rank(&[], 0.0, 100, 300, RankRule::Ratio(1e-9)).unwrap(),
            1
        );
        for bad in [
            RankRule::Fixed(0),
            RankRule::Energy(0.0),
            RankRule::Energy(1.5),
            RankRule::Ratio(-1.0),
            RankRule::Ratio(f64::NAN),
        ] {
            assert!(select_rank(&s, tot, 4, 4, bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn compress_meets_its_rule(m in 2usize..30, n in 2usize..30, f in 0.3f64..0.99, seed in 0u64..500) {
            let a = randn(m * n, seed);
            let am = MatRef::new(&a, m, n).unwrap();
            let full = svd(am, Precision::F64, Par::Seq).unwrap();
            // energy rule, both methods: kept energy >= f, i.e. error^2 <= 1 - f (+ rounding)
            for method in [Method::Svd, Method::Rsvd(RsvdParams::default())] {
                let c = compress_matrix("w", am, method, RankRule::Energy(f), Par::Seq).unwrap();
                prop_assert!(c.report.rel_error.powi(2) <= 1.0 - f + 1e-4, "{method:?} {}", c.report);
                prop_assert!(c.report.rel_error >= optimal_rel_error(&full.s, c.report.rank) * (1.0 - 1e-4) - 1e-6);
                prop_assert_eq!(c.report.params_after, c.report.rank * (m + n));
            }
            // svd with a fixed rank is the optimum, and the error decreases with the rank
            let mut last = f64::INFINITY;
            for r in 1..=m.min(n) {
                let c = compress_matrix("w", am, Method::Svd, RankRule::Fixed(r), Par::Seq).unwrap();
                let opt = optimal_rel_error(&full.s, r);
                prop_assert!((c.report.rel_error - opt).abs() <= 1e-4 * opt + 1e-6);
                prop_assert!(c.report.rel_error <= last + 1e-6);
                last = c.report.rel_error;
            }
        }
    }
}

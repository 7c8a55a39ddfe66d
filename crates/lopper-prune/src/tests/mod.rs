//! Unit and property tests of lopper-prune (one test binary, one file per area).
mod checkpoint;
mod criteria;
mod dst;
mod granularity;
mod schedule;
mod scope;
mod store;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random values in [-2, 2), with about a third forced onto a few repeated magnitudes (ties).
pub(crate) fn values_with_ties(n: usize, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: f32 = r.random_range(-2.0..2.0);
            if r.random_bool(0.35) {
                x.signum() * (r.random_range(1..4) as f32) * 0.5
            } else {
                x
            }
        })
        .collect()
}

/// Random values without zeros or ties (almost surely).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| r.random_range(0.01f32..2.0) * if r.random_bool(0.5) { 1.0 } else { -1.0 })
        .collect()
}

/// Count of `true`.
pub(crate) fn count(m: &[bool]) -> usize {
    m.iter().filter(|&&b| b).count()
}

/// Python's round((1 - s) * n).
pub(crate) fn py_round(n: usize, s: f64) -> usize {
    ((1.0 - s) * n as f64).round_ties_even() as usize
}

/// Every kept score >= every dropped score, and among equal scores the kept index is lower.
pub(crate) fn assert_topk_order(scores: &[f32], mask: &[bool]) {
    let mut min_kept: Option<(f32, usize)> = None;
    let mut max_drop: Option<(f32, usize)> = None;
    for (i, (&s, &k)) in scores.iter().zip(mask).enumerate() {
        if k {
            if min_kept.is_none_or(|(m, _)| s <= m) {
                min_kept = Some((s, i));
            }
        } else if max_drop.is_none_or(|(m, _)| s > m) {
            max_drop = Some((s, i));
        }
    }
    if let (Some((k, ki)), Some((d, di))) = (min_kept, max_drop) {
        assert!(
            k > d || (k == d && ki < di),
            "kept {k}@{ki} vs dropped {d}@{di}"
        );
    }
}

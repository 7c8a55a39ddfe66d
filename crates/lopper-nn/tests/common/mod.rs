//! Finite-difference helpers shared by the gradient tests.
#![allow(dead_code)]
use lopper_nn::ParamMut;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub fn randv(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

/// `sum a * b` in f64.
pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Asserts that `analytic` matches `numeric`: ||a - n|| <= rtol ||n|| + atol, and that the numeric
/// gradient is not zero (else the check could not fail).
pub fn assert_close(what: &str, analytic: &[f32], numeric: &[f64], rtol: f64) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths");
    let err = analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (*a as f64 - n).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    assert!(
        norm > 1e-6,
        "{what}: numeric gradient is ~0 ({norm:e}); the check would be vacuous"
    );
    assert!(
        err <= rtol * norm + 1e-5,
        "{what}: |analytic - numeric| = {err:e} vs |numeric| = {norm:e}\n analytic {:?}\n numeric {:?}",
        &analytic[..analytic.len().min(8)],
        &numeric[..numeric.len().min(8)]
    );
}

/// Central differences of `loss` for entries `idx` of `values` (a plain buffer).
pub fn fd_vec(
    values: &mut [f32],
    idx: &[usize],
    eps: f32,
    loss: &mut dyn FnMut(&[f32]) -> f64,
) -> Vec<f64> {
    idx.iter()
        .map(|&i| {
            let old = values[i];
            values[i] = old + eps;
            let lp = loss(values);
            values[i] = old - eps;
            let lm = loss(values);
            values[i] = old;
            (lp - lm) / (2.0 * (eps as f64))
        })
        .collect()
}

/// Gradients of every parameter of `m` as owned vectors.
pub fn grads_of<T>(
    m: &mut T,
    params: for<'a> fn(&'a mut T) -> Vec<ParamMut<'a>>,
) -> Vec<(String, Vec<f32>)> {
    params(m)
        .into_iter()
        .map(|p| (p.name, p.grad.to_vec()))
        .collect()
}

fn nudge<T>(
    m: &mut T,
    params: for<'a> fn(&'a mut T) -> Vec<ParamMut<'a>>,
    name: &str,
    i: usize,
    v: Option<f32>,
) -> f32 {
    let mut ps = params(m);
    let p = ps.iter_mut().find(|p| p.name == name).expect("parameter");
    let old = p.values[i];
    if let Some(v) = v {
        p.values[i] = v;
    }
    old
}

/// Checks every parameter's analytic gradient (`grads`) against central differences of `loss`,
/// on at most `max_per` evenly spaced entries per parameter.
pub fn check_params<T>(
    m: &mut T,
    params: for<'a> fn(&'a mut T) -> Vec<ParamMut<'a>>,
    loss: &mut dyn FnMut(&mut T) -> f64,
    grads: &[(String, Vec<f32>)],
    eps: f32,
    rtol: f64,
    max_per: usize,
) {
    for (name, g) in grads {
        let step = g.len().div_ceil(max_per).max(1);
        let idx: Vec<usize> = (0..g.len()).step_by(step).collect();
        let numeric: Vec<f64> = idx
            .iter()
            .map(|&i| {
                let old = nudge(m, params, name, i, None);
                nudge(m, params, name, i, Some(old + eps));
                let lp = loss(m);
                nudge(m, params, name, i, Some(old - eps));
                let lm = loss(m);
                nudge(m, params, name, i, Some(old));
                (lp - lm) / (2.0 * eps as f64)
            })
            .collect();
        let analytic: Vec<f32> = idx.iter().map(|&i| g[i]).collect();
        assert_close(name, &analytic, &numeric, rtol);
    }
}

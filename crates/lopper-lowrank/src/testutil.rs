//! Helpers shared by the unit tests.
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// n samples of N(0, 1), reproducible from `seed`.
pub fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Largest |Q^T Q - I| over the columns (`cols == true`: columns of the (r, c) row-major `q`
/// are orthonormal) or the rows (`cols == false`).
pub fn orth_defect(q: &[f32], r: usize, c: usize, cols: bool) -> f64 {
    let (n, len) = if cols { (c, r) } else { (r, c) };
    let at = |v: usize, i: usize| -> f64 {
        if cols {
            q[i * c + v] as f64
        } else {
            q[v * c + i] as f64
        }
    };
    let mut worst = 0.0f64;
    for a in 0..n {
        for b in 0..n {
            let d: f64 = (0..len).map(|i| at(a, i) * at(b, i)).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            worst = worst.max((d - want).abs());
        }
    }
    worst
}

/// Dense reference product (M, K) x (K, N) in f64.
pub fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p] as f64;
            for j in 0..n {
                out[i * n + j] += x * b[p * n + j] as f64;
            }
        }
    }
    out
}

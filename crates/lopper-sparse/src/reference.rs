//! Plain f64 dense references for every kernel: what the tests compare against.
use crate::{Csr, Sparse24};

/// Y = W X in f64 through W's dense form. X is (K, N) row-major; returns (M, N).
pub fn spmm(w_dense: &[f32], m: usize, k: usize, x: &[f32], n: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let a = w_dense[i * k + p] as f64;
            if a != 0.0 {
                for j in 0..n {
                    y[i * n + j] += a * x[p * n + j] as f64;
                }
            }
        }
    }
    y
}

/// Y = W^T X in f64. W is (M, K), X is (M, N); returns (K, N).
pub fn spmm_t(w_dense: &[f32], m: usize, k: usize, x: &[f32], n: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; k * n];
    for i in 0..m {
        for p in 0..k {
            let a = w_dense[i * k + p] as f64;
            if a != 0.0 {
                for j in 0..n {
                    y[p * n + j] += a * x[i * n + j] as f64;
                }
            }
        }
    }
    y
}

/// `out[p] = A[i,:] . B[j,:]` in f64 for each stored (i, j) of `pattern`. A (M, D), B (K, D).
pub fn sddmm(pattern: &Csr, a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(pattern.nnz());
    for i in 0..pattern.rows() {
        for &j in pattern.row(i).0 {
            let j = j as usize;
            out.push(
                (0..d)
                    .map(|t| a[i * d + t] as f64 * b[j * d + t] as f64)
                    .sum(),
            );
        }
    }
    out
}

/// Y = W X for a 2:4 W, through its dense form.
pub fn spmm_24(w: &Sparse24, x: &[f32], n: usize) -> Vec<f64> {
    spmm(&w.to_dense(), w.rows(), w.cols(), x, n)
}

/// Tolerance for an f32 reduction of length `len` against an f64 reference `r`:
/// `atol + rtol * |r|` with both scaled by the length (f32 eps ~ 1.2e-7).
pub fn tolerance(len: usize, r: f64, scale: f64) -> f64 {
    let eps = f32::EPSILON as f64;
    let l = (len.max(1)) as f64;
    4.0 * eps * l * scale + 4.0 * eps * l.sqrt() * r.abs()
}

//! Tensor-train (Oseledets 2011) by TT-SVD, and TT-matrices.
//!
//! A d-way tensor X (n_1, ..., n_d) is written as cores G_k (r_{k-1}, n_k, r_k), r_0 = r_d = 1:
//!   X[i_1, ..., i_d] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_d[:, i_d, :].
//! TT-SVD: with delta = tol ||X||_F / sqrt(d - 1), sweep left to right; at step k reshape the
//! remainder C to (r_{k-1} n_k, rest), take its SVD and keep the smallest rank whose discarded
//! tail has norm <= delta; G_k = U, C = diag(s) V^T. The result satisfies ||X - TT||_F <= tol ||X||_F.
//!
//! TT-matrix: a weight W (M, N) with M = prod m_k, N = prod n_k is reshaped into the d-way tensor
//! with modes (m_k n_k), index (i_k, j_k) -> i_k n_k + j_k, and decomposed as above.
use crate::svd::{Precision, svd};
use crate::{Error, Result};
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};

/// A tensor train: cores G_k (r_{k-1}, n_k, r_k), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorTrain {
    /// Mode sizes (n_1, ..., n_d).
    pub shape: Vec<usize>,
    /// TT ranks (r_0 = 1, r_1, ..., r_d = 1).
    pub ranks: Vec<usize>,
    /// Cores, core k of shape `(ranks[k], shape[k], ranks[k + 1])`.
    pub cores: Vec<Vec<f32>>,
}

impl TensorTrain {
    /// Numbers stored: sum_k r_{k-1} n_k r_k.
    pub fn params(&self) -> usize {
        self.cores.iter().map(Vec::len).sum()
    }

    /// The full tensor, row-major of `shape`: contract the cores left to right.
    pub fn to_full(&self, par: Par) -> Result<Vec<f32>> {
        // acc is (prod n_1..n_k, r_k)
        let mut acc = vec![1.0f32];
        let mut rows = 1usize;
        for (k, core) in self.cores.iter().enumerate() {
            let (r0, n, r1) = (self.ranks[k], self.shape[k], self.ranks[k + 1]);
            let mut next = vec![0.0f32; rows * n * r1];
            gemm(
                MatMut::new(&mut next, rows, n * r1)?,
                MatRef::new(&acc, rows, r0)?,
                Transpose::No,
                MatRef::new(core, r0, n * r1)?,
                Transpose::No,
                1.0,
                0.0,
                par,
            )?;
            acc = next;
            rows *= n;
        }
        Ok(acc)
    }
}

/// The product of `dims`; `None` when it overflows `usize` (no buffer has that many elements).
pub(crate) fn numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// TT-SVD of `x` (row-major, `shape` with d >= 2 modes) with relative tolerance `tol` (0 keeps
/// the full ranks: exact up to rounding).
pub fn tt_svd(x: &[f32], shape: &[usize], tol: f64, par: Par) -> Result<TensorTrain> {
    let d = shape.len();
    if d < 2 || shape.contains(&0) || numel(shape) != Some(x.len()) {
        return Err(Error::shape(
            "tt_svd",
            format!(
                "shape {shape:?} with {} elements: need >= 2 non-empty modes",
                x.len()
            ),
        ));
    }
    if !(tol >= 0.0 && tol.is_finite()) {
        return Err(Error::invalid(
            "tt_svd",
            format!("tolerance {tol} must be >= 0"),
        ));
    }
    let norm2: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let delta2 = tol * tol * norm2 / (d - 1) as f64;
    let mut ranks = vec![1usize];
    let mut cores = Vec::with_capacity(d);
    let mut c = x.to_vec();
    for k in 0..d - 1 {
        let rows = ranks[k] * shape[k];
        let cols = c.len() / rows;
        let s = svd(MatRef::new(&c, rows, cols)?, Precision::F64, par)?;
        // smallest r with discarded tail sum of s^2 <= delta^2
        let mut tail: f64 = s.s.iter().map(|v| v * v).sum();
        let mut r = 0;
        while r < s.s.len() && tail > delta2 {
            tail -= s.s[r] * s.s[r];
            r += 1;
        }
        let s = s.truncate(r.max(1))?;
        let r = s.k;
        cores.push(s.u.clone()); // (r_{k-1} n_k, r)
        // c becomes diag(s) V^T, (r, cols)
        c = s.vt;
        for (i, row) in c.chunks_exact_mut(cols).enumerate() {
            for v in row {
                *v = (*v as f64 * s.s[i]) as f32;
            }
        }
        ranks.push(r);
    }
    cores.push(c); // (r_{d-1}, n_d) = (r_{d-1}, n_d, 1)
    ranks.push(1);
    Ok(TensorTrain {
        shape: shape.to_vec(),
        ranks,
        cores,
    })
}

/// A TT-matrix: W (M, N) with M = prod row_dims, N = prod col_dims, as a TT of modes m_k n_k.
#[derive(Clone, Debug, PartialEq)]
pub struct TtMatrix {
    /// (m_1, ..., m_d).
    pub row_dims: Vec<usize>,
    /// (n_1, ..., n_d).
    pub col_dims: Vec<usize>,
    /// The train over modes (m_k n_k).
    pub train: TensorTrain,
}

/// Flat index permutation between W (M, N) row-major and the interleaved tensor (m_1 n_1, ..., m_d n_d):
/// returns for each tensor position the matrix position.
fn tt_matrix_perm(row_dims: &[usize], col_dims: &[usize]) -> Vec<usize> {
    let d = row_dims.len();
    let n: usize = col_dims.iter().product();
    let total = row_dims.iter().product::<usize>() * n;
    let mut perm = Vec::with_capacity(total);
    let mut idx = vec![0usize; d]; // combined mode indices, last fastest
    for _ in 0..total {
        let (mut i, mut j) = (0usize, 0usize);
        for k in 0..d {
            i = i * row_dims[k] + idx[k] / col_dims[k];
            j = j * col_dims[k] + idx[k] % col_dims[k];
        }
        perm.push(i * n + j);
        for k in (0..d).rev() {
            idx[k] += 1;
            if idx[k] < row_dims[k] * col_dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    perm
}

impl TtMatrix {
    /// Decomposes `w` (M, N) with M = prod row_dims, N = prod col_dims (same number of factors) at
    /// relative tolerance `tol`.
    pub fn from_matrix(
        w: MatRef<'_>,
        row_dims: &[usize],
        col_dims: &[usize],
        tol: f64,
        par: Par,
    ) -> Result<TtMatrix> {
        if row_dims.len() != col_dims.len()
            || row_dims.len() < 2
            || numel(row_dims) != Some(w.rows())
            || numel(col_dims) != Some(w.cols())
        {
            return Err(Error::shape(
                "TtMatrix::from_matrix",
                format!(
                    "{}x{} matrix with row dims {row_dims:?} and col dims {col_dims:?}",
                    w.rows(),
                    w.cols()
                ),
            ));
        }
        let perm = tt_matrix_perm(row_dims, col_dims);
        let t: Vec<f32> = perm.iter().map(|&p| w.data()[p]).collect();
        let shape: Vec<usize> = row_dims.iter().zip(col_dims).map(|(m, n)| m * n).collect();
        Ok(TtMatrix {
            row_dims: row_dims.to_vec(),
            col_dims: col_dims.to_vec(),
            train: tt_svd(&t, &shape, tol, par)?,
        })
    }

    /// The dense (M, N) matrix, row-major.
    pub fn to_dense(&self, par: Par) -> Result<Vec<f32>> {
        let t = self.train.to_full(par)?;
        let mut w = vec![0.0f32; t.len()];
        for (src, &dst) in tt_matrix_perm(&self.row_dims, &self.col_dims)
            .iter()
            .enumerate()
        {
            w[dst] = t[src];
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::rel_frobenius_error;
    use crate::testutil::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn exact_at_zero_tolerance_and_bounded_otherwise(shape in prop::collection::vec(1usize..5, 2..=5),
                                                         seed in 0u64..500) {
            let n: usize = shape.iter().product();
            let x = randn(n, seed);
            let t = tt_svd(&x, &shape, 0.0, Par::Seq).unwrap();
            prop_assert!(rel_frobenius_error(&x, &t.to_full(Par::Seq).unwrap()).unwrap() < 1e-5);
            let mut last_params = usize::MAX;
            let mut last_err = 0.0f64;
            for tol in [0.05, 0.2, 0.5, 0.9] {
                let t = tt_svd(&x, &shape, tol, Par::Seq).unwrap();
                let e = rel_frobenius_error(&x, &t.to_full(Par::Seq).unwrap()).unwrap();
                prop_assert!(e <= tol + 1e-6, "tol {tol}: error {e}");
                // looser tolerance: no more parameters, no lower error than needed
                prop_assert!(t.params() <= last_params);
                prop_assert!(e + 1e-6 >= last_err || t.params() == last_params);
                last_params = t.params();
                last_err = e;
            }
        }
    }

    #[test]
    fn tt_matrix_round_trip_and_error_decreasing_with_rank() {
        // W (12, 20) = (3*4) x (4*5)
        let w = randn(240, 3);
        let wm = MatRef::new(&w, 12, 20).unwrap();
        let exact = TtMatrix::from_matrix(wm, &[3, 4], &[4, 5], 0.0, Par::Seq).unwrap();
        assert!(rel_frobenius_error(&w, &exact.to_dense(Par::Seq).unwrap()).unwrap() < 1e-5);
        assert_eq!(exact.train.shape, [12, 20]);
        let mut errs = Vec::new();
        let mut ranks = Vec::new();
        for tol in [0.8, 0.5, 0.3, 0.1, 0.0] {
            let t = TtMatrix::from_matrix(wm, &[3, 4], &[4, 5], tol, Par::Seq).unwrap();
            errs.push(rel_frobenius_error(&w, &t.to_dense(Par::Seq).unwrap()).unwrap());
            ranks.push(t.train.ranks[1]);
        }
        assert!(ranks.windows(2).all(|r| r[0] <= r[1]), "{ranks:?}");
        assert!(errs.windows(2).all(|e| e[1] <= e[0] + 1e-6), "{errs:?}");
        assert!(errs[0] > 0.3 && *errs.last().unwrap() < 1e-5, "{errs:?}");
        // a matrix that is a Kronecker product has TT rank 1 in this layout
        let (a, b) = (randn(12, 4), randn(20, 5));
        let kron: Vec<f32> = (0..12)
            .flat_map(|i| (0..20).map(move |j| (i, j)))
            .map(|(i, j)| a[(i / 4) * 4 + j / 5] * b[(i % 4) * 5 + j % 5])
            .collect();
        let t = TtMatrix::from_matrix(
            MatRef::new(&kron, 12, 20).unwrap(),
            &[3, 4],
            &[4, 5],
            1e-4,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(t.train.ranks, [1, 1, 1]);
    }

    #[test]
    fn bad_arguments() {
        let w = randn(12, 0);
        let wm = MatRef::new(&w, 3, 4).unwrap();
        assert!(TtMatrix::from_matrix(wm, &[3], &[4], 0.1, Par::Seq).is_err());
        assert!(TtMatrix::from_matrix(wm, &[3, 1], &[2, 3], 0.1, Par::Seq).is_err());
        assert!(tt_svd(&w, &[12], 0.1, Par::Seq).is_err());
        assert!(tt_svd(&w, &[3, 4], -0.1, Par::Seq).is_err());
        // shapes whose product overflows: shape errors, not arithmetic panics
        let e = tt_svd(&w, &[usize::MAX, 2], 0.0, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("tt_svd: shape mismatch"), "{e}");
        let e = TtMatrix::from_matrix(wm, &[usize::MAX, 2], &[2, 2], 0.0, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("TtMatrix::from_matrix"), "{e}");
        let e = crate::hosvd(&w, &[usize::MAX, 2, 3], &[1, 1, 1], Par::Seq).unwrap_err();
        assert!(e.to_string().contains("hosvd: shape mismatch"), "{e}");
    }
}

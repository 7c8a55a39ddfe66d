//! `LowRank`: a weight W (M, K) stored as U (M, r) V (r, K), applied as `Y = U (V X)` so that a
//! product costs 2 r (M + K) N flops instead of 2 M K N.
use crate::svd::Svd;
use crate::{Error, Result};
use lopper_tensor::{MatMut, MatRef, Par, Tensor, Transpose, gemm};

/// Low-rank factors of an (M, K) weight: `W = U V`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    rows: usize,
    rank: usize,
    cols: usize,
    /// (M, r) row-major.
    u: Vec<f32>,
    /// (r, K) row-major.
    v: Vec<f32>,
}

/// Gradients of the backward pass of [`LowRank::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct LowRankGrads {
    /// dL/dX, (T, K).
    pub dx: Vec<f32>,
    /// dL/dU, (M, r).
    pub du: Vec<f32>,
    /// dL/dV, (r, K).
    pub dv: Vec<f32>,
}

fn mm(
    c: &mut [f32],
    (m, n): (usize, usize),
    a: (&[f32], usize, usize, Transpose),
    b: (&[f32], usize, usize, Transpose),
    par: Par,
) -> Result<()> {
    gemm(
        MatMut::new(c, m, n)?,
        MatRef::new(a.0, a.1, a.2)?,
        a.3,
        MatRef::new(b.0, b.1, b.2)?,
        b.3,
        1.0,
        0.0,
        par,
    )?;
    Ok(())
}

impl LowRank {
    /// Factors from U (rows, rank) and V (rank, cols), row-major; lengths are checked.
    pub fn new(rows: usize, rank: usize, cols: usize, u: Vec<f32>, v: Vec<f32>) -> Result<LowRank> {
        // checked: claimed dimensions whose product overflows are a mismatch, not a panic (or,
        // wrapped, a match of empty factors)
        if rows.checked_mul(rank) != Some(u.len()) || rank.checked_mul(cols) != Some(v.len()) {
            return Err(Error::shape(
                "LowRank::new",
                format!(
                    "U has {} elements (want {rows}x{rank}), V has {} (want {rank}x{cols})",
                    u.len(),
                    v.len()
                ),
            ));
        }
        Ok(LowRank {
            rows,
            rank,
            cols,
            u,
            v,
        })
    }

    /// From a (truncated) SVD: U = U_r diag(s), V = Vt_r (the singular values go to the left).
    /// Errors when the SVD's fields disagree ([`Svd::check`]).
    pub fn from_svd(s: &Svd) -> Result<LowRank> {
        s.check()?;
        let mut u = s.u.clone();
        for row in u.chunks_exact_mut(s.k.max(1)) {
            for (x, &sv) in row.iter_mut().zip(&s.s) {
                *x = (*x as f64 * sv) as f32;
            }
        }
        Ok(LowRank {
            rows: s.rows,
            rank: s.k,
            cols: s.cols,
            u,
            v: s.vt.clone(),
        })
    }

    /// From two 2-D tensors U (M, r) and V (r, K) of any float dtype.
    pub fn from_tensors(u: &Tensor, v: &Tensor) -> Result<LowRank> {
        let (m, r) = u.dims2("LowRank::from_tensors")?;
        let (r2, k) = v.dims2("LowRank::from_tensors")?;
        if r != r2 {
            return Err(Error::shape(
                "LowRank::from_tensors",
                format!("U is {m}x{r} but V is {r2}x{k}"),
            ));
        }
        LowRank::new(m, r, k, u.to_f32_vec(), v.to_f32_vec())
    }

    /// U (M, r) and V (r, K) as f32 tensors.
    pub fn to_tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_f32(&[self.rows, self.rank], self.u.clone())?,
            Tensor::from_f32(&[self.rank, self.cols], self.v.clone())?,
        ))
    }

    /// Rows M of W.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns K of W.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// U, (M, r) row-major.
    pub fn u(&self) -> &[f32] {
        &self.u
    }
    /// V, (r, K) row-major.
    pub fn v(&self) -> &[f32] {
        &self.v
    }
    /// U and V mutably (for an optimizer step).
    pub fn factors_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.u, &mut self.v)
    }

    /// Parameters stored: r (M + K).
    pub fn params(&self) -> usize {
        self.rank * (self.rows + self.cols)
    }
    /// Parameters of the dense weight: M K.
    pub fn dense_params(&self) -> usize {
        self.rows * self.cols
    }
    /// Flops of `Y = U (V X)` for X with `n` columns: 2 r K n + 2 M r n.
    pub fn flops(&self, n: usize) -> u64 {
        2 * (self.rank as u64) * (self.rows + self.cols) as u64 * n as u64
    }
    /// Flops of the dense product W X: 2 M K n.
    pub fn dense_flops(&self, n: usize) -> u64 {
        2 * (self.rows * self.cols) as u64 * n as u64
    }

    /// W = U V as a dense row-major (M, K) matrix.
    pub fn to_dense(&self, par: Par) -> Result<Vec<f32>> {
        let (m, r, k) = (self.rows, self.rank, self.cols);
        let mut w = vec![0.0f32; m * k];
        mm(
            &mut w,
            (m, k),
            (&self.u, m, r, Transpose::No),
            (&self.v, r, k, Transpose::No),
            par,
        )?;
        Ok(w)
    }

    /// W = U V as an (M, K) f32 tensor.
    pub fn to_tensor(&self, par: Par) -> Result<Tensor> {
        Ok(Tensor::from_f32(
            &[self.rows, self.cols],
            self.to_dense(par)?,
        )?)
    }

    /// `Y = U (V X)` for X (K, n): Y is (M, n).
    pub fn apply(&self, x: MatRef<'_>, par: Par) -> Result<Vec<f32>> {
        let (m, r, k, n) = (self.rows, self.rank, self.cols, x.cols());
        if x.rows() != k {
            return Err(Error::shape(
                "LowRank::apply",
                format!("W is {m}x{k}, X is {}x{n}", x.rows()),
            ));
        }
        // vx is (r, n)
        let mut vx = vec![0.0f32; r * n];
        mm(
            &mut vx,
            (r, n),
            (&self.v, r, k, Transpose::No),
            (x.data(), k, n, Transpose::No),
            par,
        )?;
        let mut y = vec![0.0f32; m * n];
        mm(
            &mut y,
            (m, n),
            (&self.u, m, r, Transpose::No),
            (&vx, r, n, Transpose::No),
            par,
        )?;
        Ok(y)
    }

    /// The layer forward with activations as rows: `Y = X W^T = (X V^T) U^T` for X (T, K); Y is (T, M).
    pub fn forward(&self, x: MatRef<'_>, par: Par) -> Result<Vec<f32>> {
        let (m, r, k, t) = (self.rows, self.rank, self.cols, x.rows());
        if x.cols() != k {
            return Err(Error::shape(
                "LowRank::forward",
                format!("W is {m}x{k}, X is {t}x{}", x.cols()),
            ));
        }
        // h is (T, r) = X V^T
        let mut h = vec![0.0f32; t * r];
        mm(
            &mut h,
            (t, r),
            (x.data(), t, k, Transpose::No),
            (&self.v, r, k, Transpose::Yes),
            par,
        )?;
        let mut y = vec![0.0f32; t * m];
        mm(
            &mut y,
            (t, m),
            (&h, t, r, Transpose::No),
            (&self.u, m, r, Transpose::Yes),
            par,
        )?;
        Ok(y)
    }

    /// Backward of [`LowRank::forward`] given X (T, K) and dY (T, M):
    /// h = X V^T (T, r), g = dY U (T, r); dU = dY^T h, dV = g^T X, dX = g V.
    pub fn backward(&self, x: MatRef<'_>, dy: MatRef<'_>, par: Par) -> Result<LowRankGrads> {
        let (m, r, k, t) = (self.rows, self.rank, self.cols, x.rows());
        if x.cols() != k || dy.rows() != t || dy.cols() != m {
            return Err(Error::shape(
                "LowRank::backward",
                format!(
                    "W is {m}x{k}, X is {t}x{}, dY is {}x{}",
                    x.cols(),
                    dy.rows(),
                    dy.cols()
                ),
            ));
        }
        let mut h = vec![0.0f32; t * r];
        mm(
            &mut h,
            (t, r),
            (x.data(), t, k, Transpose::No),
            (&self.v, r, k, Transpose::Yes),
            par,
        )?;
        let mut g = vec![0.0f32; t * r];
        mm(
            &mut g,
            (t, r),
            (dy.data(), t, m, Transpose::No),
            (&self.u, m, r, Transpose::No),
            par,
        )?;
        let mut du = vec![0.0f32; m * r];
        mm(
            &mut du,
            (m, r),
            (dy.data(), t, m, Transpose::Yes),
            (&h, t, r, Transpose::No),
            par,
        )?;
        let mut dv = vec![0.0f32; r * k];
        mm(
            &mut dv,
            (r, k),
            (&g, t, r, Transpose::Yes),
            (x.data(), t, k, Transpose::No),
            par,
        )?;
        let mut dx = vec![0.0f32; t * k];
        mm(
            &mut dx,
            (t, k),
            (&g, t, r, Transpose::No),
            (&self.v, r, k, Transpose::No),
            par,
        )?;
        Ok(LowRankGrads { dx, du, dv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    fn close(got: &[f32], want: &[f64], len: usize) -> bool {
        let tol = 1e-5 * (len as f64 + 1.0);
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(&g, &w)| (g as f64 - w).abs() <= tol * (1.0 + w.abs()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn products_match_dense_reference(m in 1usize..20, r in 1usize..8, k in 1usize..20,
                                          t in 1usize..12, seed in 0u64..1000) {
            let u = randn(m * r, seed);
            let v = randn(r * k, seed + 1);
            let lr = LowRank::new(m, r, k, u.clone(), v.clone()).unwrap();
            let w = matmul_ref(&u, &v, m, r, k);
            prop_assert!(close(&lr.to_dense(Par::Seq).unwrap(), &w, r));
            let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
            // Y = U (V X) for X (K, T)
            let xc = randn(k * t, seed + 2);
            prop_assert!(close(&lr.apply(MatRef::new(&xc, k, t).unwrap(), Par::Seq).unwrap(),
                               &matmul_ref(&w32, &xc, m, k, t), k * r));
            // forward Y = X W^T and the backward against dW = dY^T X
            let x = randn(t * k, seed + 3);
            let dy = randn(t * m, seed + 4);
            let wt: Vec<f32> = (0..k).flat_map(|j| (0..m).map(|i| w32[i * k + j]).collect::<Vec<_>>()).collect();
            prop_assert!(close(&lr.forward(MatRef::new(&x, t, k).unwrap(), Par::Seq).unwrap(),
                               &matmul_ref(&x, &wt, t, k, m), k * r));
            let g = lr.backward(MatRef::new(&x, t, k).unwrap(), MatRef::new(&dy, t, m).unwrap(), Par::Seq).unwrap();
            prop_assert!(close(&g.dx, &matmul_ref(&dy, &w32, t, m, k), m * r));
            // dW (M, K) = dY^T X; dU = dW V^T, dV = U^T dW
            let dyt: Vec<f32> = (0..m).flat_map(|i| (0..t).map(|s| dy[s * m + i]).collect::<Vec<_>>()).collect();
            let dw: Vec<f32> = matmul_ref(&dyt, &x, m, t, k).into_iter().map(|x| x as f32).collect();
            let vt: Vec<f32> = (0..k).flat_map(|j| (0..r).map(|p| v[p * k + j]).collect::<Vec<_>>()).collect();
            let ut: Vec<f32> = (0..r).flat_map(|p| (0..m).map(|i| u[i * r + p]).collect::<Vec<_>>()).collect();
            prop_assert!(close(&g.du, &matmul_ref(&dw, &vt, m, k, r), t * k));
            prop_assert!(close(&g.dv, &matmul_ref(&ut, &dw, r, m, k), t * m));
        }
    }

    #[test]
    fn flops_params_and_shape_errors() {
        let lr = LowRank::new(100, 4, 50, vec![0.0; 400], vec![0.0; 200]).unwrap();
        assert_eq!(lr.params(), 600);
        assert_eq!(lr.dense_params(), 5000);
        assert_eq!(lr.flops(10), 2 * 4 * 150 * 10);
        assert_eq!(lr.dense_flops(10), 2 * 5000 * 10);
        assert!(LowRank::new(3, 2, 3, vec![0.0; 5], vec![0.0; 6]).is_err());
        // 2^32 x 2^32 wraps to 0 in usize: empty factors must not pass for a 2^32 x 0 layer
        let e = LowRank::new(1 << 32, 1 << 32, 0, vec![], vec![]).unwrap_err();
        assert!(
            e.to_string().contains("LowRank::new: shape mismatch"),
            "{e}"
        );
        let x = vec![0.0; 7];
        assert!(
            lr.forward(MatRef::new(&x, 1, 7).unwrap(), Par::Seq)
                .is_err()
        );
        let (tu, tv) = lr.to_tensors().unwrap();
        assert_eq!(LowRank::from_tensors(&tu, &tv).unwrap(), lr);
        assert!(LowRank::from_tensors(&tv, &tu).is_err());
    }
}

//! Truncated SVD through faer (never hand-written): `A (M, N) = U diag(s) V^T`.
//!
//! faer computes in column-major storage; the results are copied into row-major `Vec<f32>` so that
//! they plug into lopper's [`MatRef`] views. Singular values are kept in f64 for exact error sums.
use crate::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::ComputeSvdVectors;
use faer::traits::RealField;
use lopper_tensor::{MatRef, Par};

/// A thin SVD `A ~ U diag(s) Vt`, factors row-major.
///
/// `u` is (rows, k), `s` has k values in non-increasing order, `vt` is (k, cols).
#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// Rows of the decomposed matrix (M).
    pub rows: usize,
    /// Columns of the decomposed matrix (N).
    pub cols: usize,
    /// Number of singular triplets kept (k).
    pub k: usize,
    /// Left singular vectors, (M, k) row-major.
    pub u: Vec<f32>,
    /// Singular values, non-increasing, length k.
    pub s: Vec<f64>,
    /// Right singular vectors transposed, (k, N) row-major.
    pub vt: Vec<f32>,
}

/// Precision faer computes the decomposition in. f32 is about twice as fast; f64 gives singular
/// values accurate to ~1e-15 relative (what the Eckart-Young exactness checks want).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Compute in f32.
    #[default]
    F32,
    /// Compute in f64 (the input is widened first).
    F64,
}

impl Svd {
    /// Checks that the public fields agree: `u` holds rows x k values, `s` k, `vt` k x cols
    /// (an `Svd` assembled by hand can be inconsistent; its methods would read out of bounds).
    pub fn check(&self) -> Result<()> {
        let want = |what: &str, len: usize, dims: &[usize]| -> Result<()> {
            let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n != Some(len) {
                return Err(Error::shape(
                    "Svd",
                    format!(
                        "{what} has {len} values, but rows = {}, k = {}, cols = {} need {}",
                        self.rows,
                        self.k,
                        self.cols,
                        dims.iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" x ")
                    ),
                ));
            }
            Ok(())
        };
        want("u", self.u.len(), &[self.rows, self.k])?;
        want("s", self.s.len(), &[self.k])?;
        want("vt", self.vt.len(), &[self.k, self.cols])
    }

    /// Keeps the first `r` triplets (`r` is clamped to `k`). Errors when the fields disagree
    /// ([`Svd::check`]).
    pub fn truncate(mut self, r: usize) -> Result<Svd> {
        self.check()?;
        let r = r.min(self.k);
        if r == self.k {
            return Ok(self);
        }
        self.u = (0..self.rows)
            .flat_map(|i| self.u[i * self.k..i * self.k + r].to_vec())
            .collect();
        self.s.truncate(r);
        self.vt.truncate(r * self.cols);
        self.k = r;
        Ok(self)
    }

    /// `U diag(s) Vt` as a dense row-major (M, N) matrix, through faer's GEMM.
    pub fn reconstruct(&self, par: Par) -> Result<Vec<f32>> {
        self.check()?;
        // us is (M, k): U with column j scaled by s[j]
        let mut us = self.u.clone();
        for row in us.chunks_exact_mut(self.k.max(1)) {
            for (x, &s) in row.iter_mut().zip(&self.s) {
                *x = (*x as f64 * s) as f32;
            }
        }
        let mut out = vec![0.0f32; self.rows * self.cols];
        lopper_tensor::gemm(
            lopper_tensor::MatMut::new(&mut out, self.rows, self.cols)?,
            MatRef::new(&us, self.rows, self.k)?,
            lopper_tensor::Transpose::No,
            MatRef::new(&self.vt, self.k, self.cols)?,
            lopper_tensor::Transpose::No,
            1.0,
            0.0,
            par,
        )?;
        Ok(out)
    }
}

/// Thin SVD of a faer matrix of f32 or f64 with explicit parallelism: `(U (M, p), s, V (N, p))`,
/// p = min(M, N).
pub(crate) fn faer_thin_svd<T: RealField + Copy + Into<f64>>(
    op: &'static str,
    a: faer::MatRef<'_, T>,
    par: faer::Par,
) -> Result<(faer::Mat<T>, Vec<f64>, faer::Mat<T>)> {
    let (m, n) = a.shape();
    let p = m.min(n);
    let mut u = faer::Mat::<T>::zeros(m, p);
    let mut v = faer::Mat::<T>::zeros(n, p);
    let mut s = faer::diag::Diag::<T>::zeros(p);
    if p == 0 {
        return Ok((u, Vec::new(), v));
    }
    if !a
        .col_iter()
        .all(|c| c.iter().all(|x| (*x).into().is_finite()))
    {
        return Err(Error::NoConvergence {
            op,
            rows: m,
            cols: n,
        });
    }
    let req = faer::linalg::svd::svd_scratch::<T>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::Thin,
        par,
        Default::default(),
    );
    let mut mem = MemBuffer::new(req);
    faer::linalg::svd::svd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence {
        op,
        rows: m,
        cols: n,
    })?;
    let s = s.column_vector().iter().map(|x| (*x).into()).collect();
    Ok((u, s, v))
}

/// Row-major f32 copy of the first `k` columns of a faer matrix: (rows, k).
pub(crate) fn cols_row_major<T: RealField + Copy + Into<f64>>(
    a: faer::MatRef<'_, T>,
    k: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.nrows() * k);
    for i in 0..a.nrows() {
        out.extend((0..k).map(|j| a[(i, j)].into() as f32));
    }
    out
}

/// Row-major f32 copy of the transpose of the first `k` columns: (k, rows).
pub(crate) fn cols_transposed<T: RealField + Copy + Into<f64>>(
    a: faer::MatRef<'_, T>,
    k: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.nrows() * k);
    for j in 0..k {
        out.extend(a.col(j).iter().map(|x| (*x).into() as f32));
    }
    out
}

/// Full thin SVD of `a` (M, N): k = min(M, N) triplets, singular values non-increasing.
///
/// Errors with [`Error::NoConvergence`] on NaN/Inf input instead of panicking.
pub fn svd(a: MatRef<'_>, precision: Precision, par: Par) -> Result<Svd> {
    let (m, n) = (a.rows(), a.cols());
    let (u, s, v) = match precision {
        Precision::F32 => {
            let (u, s, v) = faer_thin_svd("svd", a.as_faer(), par.to_faer())?;
            let k = s.len();
            (
                cols_row_major(u.as_ref(), k),
                s,
                cols_transposed(v.as_ref(), k),
            )
        }
        Precision::F64 => {
            let a64 = faer::Mat::<f64>::from_fn(m, n, |i, j| a.data()[i * n + j] as f64);
            let (u, s, v) = faer_thin_svd("svd", a64.as_ref(), par.to_faer())?;
            let k = s.len();
            (
                cols_row_major(u.as_ref(), k),
                s,
                cols_transposed(v.as_ref(), k),
            )
        }
    };
    Ok(Svd {
        rows: m,
        cols: n,
        k: s.len(),
        u,
        s,
        vt: v,
    })
}

/// Rank-`r` truncated SVD of `a` (the Eckart-Young optimum in Frobenius and spectral norm).
///
/// `r` must be at least 1; it is clamped to min(M, N).
pub fn truncated_svd(a: MatRef<'_>, r: usize, precision: Precision, par: Par) -> Result<Svd> {
    if r == 0 {
        return Err(Error::invalid("truncated_svd", "rank must be at least 1"));
    }
    svd(a, precision, par)?.truncate(r)
}

/// `sqrt(sum_{i >= r} s_i^2 / sum_i s_i^2)`: the relative Frobenius error of the best rank-r
/// approximation, from all singular values `s` (0 for a zero matrix).
pub fn optimal_rel_error(s: &[f64], r: usize) -> f64 {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total == 0.0 {
        return 0.0;
    }
    let tail: f64 = s.iter().skip(r).map(|x| x * x).sum();
    (tail / total).sqrt()
}

/// `||a - b||_F / ||a||_F` accumulated in f64 (the absolute error when `a` is zero).
pub fn rel_frobenius_error(a: &[f32], b: &[f32]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::shape(
            "rel_frobenius_error",
            format!("lengths {} and {} differ", a.len(), b.len()),
        ));
    }
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += x as f64 * x as f64;
    }
    Ok(if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    /// An Svd whose public fields disagree is an error naming the field, from every method that
    /// reads them (truncate sliced out of bounds and panicked; from_svd built a LowRank whose
    /// factors did not match its shape).
    #[test]
    fn inconsistent_fields_are_errors() {
        let good = svd(
            MatRef::new(&randn(12, 3), 3, 4).unwrap(),
            Precision::F64,
            Par::Seq,
        )
        .unwrap();
        assert!(good.check().is_ok());
        let mut short_u = good.clone();
        short_u.u.pop();
        let mut long_s = good.clone();
        long_s.s.push(0.0);
        let mut big_k = good.clone();
        big_k.k = usize::MAX;
        for (bad, field) in [(short_u, "u has"), (long_s, "s has"), (big_k, "u has")] {
            for e in [
                bad.check().unwrap_err(),
                bad.clone().truncate(1).unwrap_err(),
                crate::LowRank::from_svd(&bad).unwrap_err(),
                bad.reconstruct(Par::Seq).unwrap_err(),
            ] {
                assert!(e.to_string().contains(field), "{field}: {e}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn truncated_svd_is_eckart_young_optimal(m in 1usize..24, n in 1usize..24, r in 1usize..24,
                                                 seed in 0u64..1000, f64p: bool) {
            let a = randn(m * n, seed);
            let prec = if f64p { Precision::F64 } else { Precision::F32 };
            let full = svd(MatRef::new(&a, m, n).unwrap(), prec, Par::Seq).unwrap();
            // reconstruction identity at full rank
            let back = full.reconstruct(Par::Seq).unwrap();
            let e_full = rel_frobenius_error(&a, &back).unwrap();
            prop_assert!(e_full < 1e-5 * (1.0 + (m.max(n) as f64).sqrt()), "full-rank error {e_full}");
            // U^T U = I, V V^T = I
            prop_assert!(orth_defect(&full.u, m, full.k, true) < 1e-4);
            prop_assert!(orth_defect(&full.vt, full.k, n, false) < 1e-4);
            // singular values non-increasing, non-negative
            prop_assert!(full.s.windows(2).all(|w| w[0] >= w[1]) && full.s.iter().all(|&x| x >= 0.0));
            // truncation error equals the Eckart-Young optimum
            let t = truncated_svd(MatRef::new(&a, m, n).unwrap(), r, prec, Par::Seq).unwrap();
            let rec = t.reconstruct(Par::Seq).unwrap();
            let got = rel_frobenius_error(&a, &rec).unwrap();
            let want = optimal_rel_error(&full.s, r);
            // f32 rounding of the factors leaves ~1e-7 sqrt(size) even where the optimum is 0
            let atol = if f64p { 1e-6 } else { 2e-6 * (1.0 + (m.max(n) as f64).sqrt()) };
            prop_assert!((got - want).abs() <= 1e-4 * want + atol, "got {got} want {want}");
        }
    }

    #[test]
    fn nan_input_is_an_error_not_a_panic() {
        let mut a = randn(12, 3);
        a[5] = f32::NAN;
        let e = svd(MatRef::new(&a, 3, 4).unwrap(), Precision::F32, Par::Seq).unwrap_err();
        assert!(matches!(e, Error::NoConvergence { .. }), "{e}");
        assert!(
            truncated_svd(MatRef::new(&a, 3, 4).unwrap(), 0, Precision::F32, Par::Seq).is_err()
        );
    }

    #[test]
    fn known_singular_values() {
        // diag(3, 2) padded: singular values 3, 2
        let a = vec![0.0, 3.0, 0.0, 2.0, 0.0, 0.0];
        let s = svd(MatRef::new(&a, 2, 3).unwrap(), Precision::F64, Par::Seq).unwrap();
        assert!(
            (s.s[0] - 3.0).abs() < 1e-12 && (s.s[1] - 2.0).abs() < 1e-12,
            "{:?}",
            s.s
        );
        assert!((optimal_rel_error(&s.s, 1) - (4.0f64 / 13.0).sqrt()).abs() < 1e-12);
    }
}

//! Tucker decomposition of 3- and 4-way tensors (convolution kernels (O, I, kh, kw)):
//!   X (n_1, ..., n_d) ~ G x_1 U_1 x_2 U_2 ... x_d U_d,  U_k (n_k, r_k) orthonormal, G (r_1, ..., r_d).
//! - HOSVD (De Lathauwer et al. 2000): U_k = top-r_k left singular vectors of the mode-k unfolding
//!   X_(k) (n_k, prod_{j != k} n_j); G = X x_1 U_1^T ... x_d U_d^T.
//! - HOOI: starting from HOSVD, for each mode k in turn, U_k = top-r_k left singular vectors of
//!   (X x_{j != k} U_j^T)_(k); a few sweeps; the error never exceeds HOSVD's.
//!
//! Mode products are GEMMs (lopper_tensor::gemm on faer); SVDs are faer's.
use crate::svd::{Precision, svd};
use crate::{Error, Result};
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};

/// A Tucker decomposition: core G and one factor per mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Tucker {
    /// Shape of the decomposed tensor (n_1, ..., n_d).
    pub shape: Vec<usize>,
    /// Ranks (r_1, ..., r_d) = shape of the core.
    pub ranks: Vec<usize>,
    /// Core G, row-major (r_1, ..., r_d).
    pub core: Vec<f32>,
    /// Factors U_k, each (n_k, r_k) row-major with orthonormal columns.
    pub factors: Vec<Vec<f32>>,
}

/// `Y = X x_k M` for X of `shape` (row-major) and M (p, n_k): Y has n_k replaced by p.
/// X is viewed as (before, n_k, after); each of the `before` slices is one GEMM M (p, n_k) x (n_k, after).
pub fn mode_product(
    x: &[f32],
    shape: &[usize],
    k: usize,
    m: MatRef<'_>,
    par: Par,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let nk = shape[k];
    if m.cols() != nk || x.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "mode_product",
            format!(
                "tensor {shape:?} ({} elements), mode {k}, matrix {}x{}",
                x.len(),
                m.rows(),
                m.cols()
            ),
        ));
    }
    let p = m.rows();
    let before: usize = shape[..k].iter().product();
    let after: usize = shape[k + 1..].iter().product();
    let mut out = vec![0.0f32; before * p * after];
    for b in 0..before {
        let src = &x[b * nk * after..(b + 1) * nk * after];
        let dst = &mut out[b * p * after..(b + 1) * p * after];
        gemm(
            MatMut::new(dst, p, after)?,
            m,
            Transpose::No,
            MatRef::new(src, nk, after)?,
            Transpose::No,
            1.0,
            0.0,
            par,
        )?;
    }
    let mut s = shape.to_vec();
    s[k] = p;
    Ok((out, s))
}

/// The mode-k unfolding X_(k), (n_k, prod_{j != k} n_j) row-major (columns in row-major order of the
/// other indices).
fn unfold(x: &[f32], shape: &[usize], k: usize) -> Vec<f32> {
    let nk = shape[k];
    let before: usize = shape[..k].iter().product();
    let after: usize = shape[k + 1..].iter().product();
    let mut out = vec![0.0f32; x.len()];
    for b in 0..before {
        for i in 0..nk {
            let src = &x[(b * nk + i) * after..(b * nk + i + 1) * after];
            out[i * before * after + b * after..i * before * after + (b + 1) * after]
                .copy_from_slice(src);
        }
    }
    out
}

/// Top-r left singular vectors of the mode-k unfolding, (n_k, r), and all singular values.
fn leading_vectors(
    x: &[f32],
    shape: &[usize],
    k: usize,
    r: usize,
    par: Par,
) -> Result<(Vec<f32>, Vec<f64>)> {
    let nk = shape[k];
    let rest = x.len() / nk.max(1);
    let xk = unfold(x, shape, k);
    let s = svd(MatRef::new(&xk, nk, rest)?, Precision::F64, par)?;
    let sv = s.s.clone();
    let t = s.truncate(r)?;
    if t.k < r {
        // fewer singular vectors than asked (r > prod of the other modes): pad with zeros
        let mut u = vec![0.0f32; nk * r];
        for i in 0..nk {
            u[i * r..i * r + t.k].copy_from_slice(&t.u[i * t.k..(i + 1) * t.k]);
        }
        return Ok((u, sv));
    }
    Ok((t.u, sv))
}

fn check(op: &'static str, shape: &[usize], len: usize, ranks: &[usize]) -> Result<()> {
    if !(3..=4).contains(&shape.len()) || crate::tt::numel(shape) != Some(len) || shape.contains(&0)
    {
        return Err(Error::shape(
            op,
            format!("want a non-empty 3- or 4-way tensor, got shape {shape:?} with {len} elements"),
        ));
    }
    if ranks.len() != shape.len() || ranks.iter().zip(shape).any(|(&r, &n)| r == 0 || r > n) {
        return Err(Error::invalid(
            op,
            format!("ranks {ranks:?} for shape {shape:?}: need 1 <= r_k <= n_k"),
        ));
    }
    Ok(())
}

/// G = X x_1 U_1^T ... x_d U_d^T.
fn core_of(
    x: &[f32],
    shape: &[usize],
    factors: &[Vec<f32>],
    ranks: &[usize],
    skip: Option<usize>,
    par: Par,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut cur = x.to_vec();
    let mut s = shape.to_vec();
    for k in 0..shape.len() {
        if Some(k) == skip {
            continue;
        }
        // U_k^T is (r_k, n_k): transpose the (n_k, r_k) factor
        let (n, r) = (shape[k], ranks[k]);
        let ut: Vec<f32> = (0..r)
            .flat_map(|j| (0..n).map(move |i| (i, j)))
            .map(|(i, j)| factors[k][i * r + j])
            .collect();
        (cur, s) = mode_product(&cur, &s, k, MatRef::new(&ut, r, n)?, par)?;
    }
    Ok((cur, s))
}

impl Tucker {
    /// The full tensor G x_1 U_1 ... x_d U_d, row-major of `shape`.
    pub fn to_full(&self, par: Par) -> Result<Vec<f32>> {
        let mut cur = self.core.clone();
        let mut s = self.ranks.clone();
        for k in 0..self.shape.len() {
            let u = MatRef::new(&self.factors[k], self.shape[k], self.ranks[k])?;
            (cur, s) = mode_product(&cur, &s, k, u, par)?;
        }
        Ok(cur)
    }

    /// Numbers stored: prod r_k + sum n_k r_k.
    pub fn params(&self) -> usize {
        self.ranks.iter().product::<usize>()
            + self
                .shape
                .iter()
                .zip(&self.ranks)
                .map(|(n, r)| n * r)
                .sum::<usize>()
    }
}

/// Truncated HOSVD of `x` (row-major, `shape` 3- or 4-way) at the given ranks.
pub fn hosvd(x: &[f32], shape: &[usize], ranks: &[usize], par: Par) -> Result<Tucker> {
    check("hosvd", shape, x.len(), ranks)?;
    let mut factors = Vec::with_capacity(shape.len());
    for k in 0..shape.len() {
        factors.push(leading_vectors(x, shape, k, ranks[k], par)?.0);
    }
    let (core, _) = core_of(x, shape, &factors, ranks, None, par)?;
    Ok(Tucker {
        shape: shape.to_vec(),
        ranks: ranks.to_vec(),
        core,
        factors,
    })
}

/// HOSVD with ranks chosen so that ||X - X_hat||_F <= tol ||X||_F: in each mode the discarded
/// squared singular values of the unfolding stay below tol^2 ||X||^2 / d (the HOSVD error bound).
pub fn hosvd_tol(x: &[f32], shape: &[usize], tol: f64, par: Par) -> Result<Tucker> {
    if !(tol >= 0.0 && tol.is_finite()) {
        return Err(Error::invalid(
            "hosvd_tol",
            format!("tolerance {tol} must be >= 0"),
        ));
    }
    check("hosvd_tol", shape, x.len(), &vec![1; shape.len()])?;
    let total: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let budget = tol * tol * total / shape.len() as f64;
    let mut ranks = Vec::with_capacity(shape.len());
    for k in 0..shape.len() {
        let (_, s) = leading_vectors(x, shape, k, 1, par)?;
        // smallest r whose tail sum of s^2 is within the budget
        let mut tail: f64 = s.iter().map(|v| v * v).sum();
        let mut r = 0;
        while r < s.len() && tail > budget {
            tail -= s[r] * s[r];
            r += 1;
        }
        ranks.push(r.clamp(1, shape[k]));
    }
    hosvd(x, shape, &ranks, par)
}

/// HOOI: `sweeps` rounds of alternating refinement starting from the HOSVD.
pub fn hooi(
    x: &[f32],
    shape: &[usize],
    ranks: &[usize],
    sweeps: usize,
    par: Par,
) -> Result<Tucker> {
    let mut t = hosvd(x, shape, ranks, par)?;
    for _ in 0..sweeps {
        for k in 0..shape.len() {
            let (y, ys) = core_of(x, shape, &t.factors, ranks, Some(k), par)?;
            t.factors[k] = leading_vectors(&y, &ys, k, ranks[k], par)?.0;
        }
    }
    t.core = core_of(x, shape, &t.factors, ranks, None, par)?.0;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::rel_frobenius_error;
    use crate::testutil::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn exact_at_full_rank_and_decreasing(shape in prop::collection::vec(1usize..6, 3..=4), seed in 0u64..500) {
            let n: usize = shape.iter().product();
            let x = randn(n, seed);
            let full = hosvd(&x, &shape, &shape, Par::Seq).unwrap();
            let e = rel_frobenius_error(&x, &full.to_full(Par::Seq).unwrap()).unwrap();
            prop_assert!(e < 1e-5, "full-rank HOSVD error {e}");
            // error non-increasing as every rank grows by one; HOOI never worse than HOSVD
            let mut last = f64::INFINITY;
            let maxr = *shape.iter().max().unwrap();
            for r in 1..=maxr {
                let ranks: Vec<usize> = shape.iter().map(|&s| r.min(s)).collect();
                let h = hosvd(&x, &shape, &ranks, Par::Seq).unwrap();
                let eh = rel_frobenius_error(&x, &h.to_full(Par::Seq).unwrap()).unwrap();
                let o = hooi(&x, &shape, &ranks, 3, Par::Seq).unwrap();
                let eo = rel_frobenius_error(&x, &o.to_full(Par::Seq).unwrap()).unwrap();
                prop_assert!(eh <= last + 1e-6, "rank {r}: {eh} after {last}");
                prop_assert!(eo <= eh + 1e-5, "HOOI {eo} vs HOSVD {eh}");
                if ranks[0] <= n / shape[0] {
                    prop_assert!(orth_defect(&o.factors[0], shape[0], ranks[0], true) < 1e-4);
                }
                last = eh;
            }
            prop_assert!(last < 1e-5);
        }

        #[test]
        fn tolerance_is_met(seed in 0u64..500, tol in 0.05f64..0.9) {
            let shape = [6, 5, 3, 3];
            let x = randn(270, seed);
            let t = hosvd_tol(&x, &shape, tol, Par::Seq).unwrap();
            let e = rel_frobenius_error(&x, &t.to_full(Par::Seq).unwrap()).unwrap();
            prop_assert!(e <= tol + 1e-6, "error {e} above tolerance {tol} with ranks {:?}", t.ranks);
        }
    }

    #[test]
    fn low_multilinear_rank_is_recovered_and_compresses() {
        // X = G x_1 A x_2 B x_3 C with ranks (2, 2, 2) in (10, 8, 9)
        let g = Tucker {
            shape: vec![10, 8, 9],
            ranks: vec![2, 2, 2],
            core: randn(8, 1),
            factors: vec![randn(20, 2), randn(16, 3), randn(18, 4)],
        };
        let x = g.to_full(Par::Seq).unwrap();
        let t = hooi(&x, &[10, 8, 9], &[2, 2, 2], 2, Par::Seq).unwrap();
        assert!(rel_frobenius_error(&x, &t.to_full(Par::Seq).unwrap()).unwrap() < 1e-5);
        assert_eq!(t.params(), 8 + 20 + 16 + 18);
        let tt = hosvd_tol(&x, &[10, 8, 9], 1e-4, Par::Seq).unwrap();
        assert_eq!(tt.ranks, [2, 2, 2]);
    }

    #[test]
    fn bad_shapes_and_ranks() {
        let x = randn(24, 0);
        assert!(hosvd(&x, &[4, 6], &[2, 2], Par::Seq).is_err());
        assert!(hosvd(&x, &[2, 3, 4], &[1, 4, 1], Par::Seq).is_err());
        assert!(hosvd(&x, &[2, 3, 5], &[1, 1, 1], Par::Seq).is_err());
        assert!(hosvd(&x, &[2, 3, 4], &[0, 1, 1], Par::Seq).is_err());
        assert!(hosvd_tol(&x, &[2, 3, 4], -1.0, Par::Seq).is_err());
    }
}

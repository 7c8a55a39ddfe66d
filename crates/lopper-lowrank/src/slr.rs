//! Sparse + low-rank: W ~ S + U V with S sparse (nnz entries) and U V of rank r (robust-PCA style
//! alternating projections, as in GoDec):
//!   S = 0
//!   repeat: L = best rank-r approximation of (W - S)        truncated SVD (faer)
//!           S = the nnz largest-magnitude entries of (W - L)  top-k of the residual
//! Each half-step is the exact minimiser over its block with the other fixed, so the error
//! ||W - S - L||_F never increases. Parameters counted: r (M + N) + nnz (values; CSR indices extra).
use crate::lowrank::LowRank;
use crate::svd::{Precision, rel_frobenius_error, truncated_svd};
use crate::{Error, Result};
use lopper_sparse::Csr;
use lopper_tensor::{MatRef, Par};

/// Tunables of [`sparse_plus_lowrank`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlrParams {
    /// Rank r of the low-rank part.
    pub rank: usize,
    /// Entries kept in the sparse part.
    pub nnz: usize,
    /// Most alternations.
    pub max_iters: usize,
    /// Stop when the relative error improves by less than this (relative) between alternations.
    pub tol: f64,
}

impl SlrParams {
    /// rank and nnz with 25 alternations at most, stopping below 1e-6 relative improvement.
    pub fn new(rank: usize, nnz: usize) -> SlrParams {
        SlrParams {
            rank,
            nnz,
            max_iters: 25,
            tol: 1e-6,
        }
    }
}

/// W ~ S + U V.
#[derive(Clone, Debug)]
pub struct SparseLowRank {
    /// The sparse part S (M, N).
    pub sparse: Csr,
    /// The low-rank part U V.
    pub low_rank: LowRank,
    /// ||W - S - U V||_F / ||W||_F after each alternation (non-increasing).
    pub history: Vec<f64>,
}

impl SparseLowRank {
    /// The final relative Frobenius error.
    pub fn rel_error(&self) -> f64 {
        self.history.last().copied().unwrap_or(f64::NAN)
    }
    /// r (M + N) + nnz.
    pub fn params(&self) -> usize {
        self.low_rank.params() + self.sparse.nnz()
    }
    /// S + U V as a dense row-major (M, N) matrix.
    pub fn to_dense(&self, par: Par) -> Result<Vec<f32>> {
        let mut d = self.low_rank.to_dense(par)?;
        for (x, s) in d.iter_mut().zip(self.sparse.to_dense()) {
            *x += s;
        }
        Ok(d)
    }
}

/// Decomposes `a` (M, N) into sparse + low-rank parts by alternating projections.
pub fn sparse_plus_lowrank(a: MatRef<'_>, params: SlrParams, par: Par) -> Result<SparseLowRank> {
    let (m, n) = (a.rows(), a.cols());
    if params.rank == 0 || params.rank > m.min(n) || params.nnz > m * n || params.max_iters == 0 {
        return Err(Error::invalid(
            "sparse_plus_lowrank",
            format!(
                "rank {} (1..={}), nnz {} (<= {}), max_iters {} (>= 1) for a {m}x{n} matrix",
                params.rank,
                m.min(n),
                params.nnz,
                m * n,
                params.max_iters
            ),
        ));
    }
    let w = a.data();
    let mut s_dense = vec![0.0f32; m * n];
    let mut resid = vec![0.0f32; m * n];
    let mut history = Vec::new();
    let mut best: Option<(Csr, LowRank)> = None;
    for _ in 0..params.max_iters {
        // L = rank-r SVD of (W - S)
        for ((r, &x), &s) in resid.iter_mut().zip(w).zip(&s_dense) {
            *r = x - s;
        }
        let low = LowRank::from_svd(&truncated_svd(
            MatRef::new(&resid, m, n)?,
            params.rank,
            Precision::F32,
            par,
        )?)?;
        let l_dense = low.to_dense(par)?;
        // S = top-nnz of (W - L)
        for ((r, &x), &l) in resid.iter_mut().zip(w).zip(&l_dense) {
            *r = x - l;
        }
        let sparse = Csr::from_topk(MatRef::new(&resid, m, n)?, params.nnz)?;
        s_dense = sparse.to_dense();
        let approx: Vec<f32> = l_dense.iter().zip(&s_dense).map(|(l, s)| l + s).collect();
        let err = rel_frobenius_error(w, &approx)?;
        let prev = history.last().copied();
        history.push(err);
        best = Some((sparse, low));
        if let Some(p) = prev
            && p - err <= params.tol * p.max(f64::MIN_POSITIVE)
        {
            break;
        }
    }
    let (sparse, low_rank) = best.expect("max_iters >= 1");
    Ok(SparseLowRank {
        sparse,
        low_rank,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use rand::{Rng, SeedableRng};

    /// rank-3 (40, 30) plus 36 large spikes at random positions.
    fn both_structures(seed: u64) -> Vec<f32> {
        let (m, n, q) = (40, 30, 3);
        let mut a: Vec<f32> = matmul_ref(&randn(m * q, seed), &randn(q * n, seed + 1), m, q, n)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 2);
        for _ in 0..36 {
            let i = rng.random_range(0..m * n);
            a[i] += if rng.random_bool(0.5) { 12.0 } else { -12.0 };
        }
        a
    }

    #[test]
    fn beats_either_alone_at_equal_parameter_count() {
        let (m, n) = (40, 30);
        for seed in [1u64, 7, 42] {
            let a = both_structures(seed);
            let am = MatRef::new(&a, m, n).unwrap();
            let slr = sparse_plus_lowrank(am, SlrParams::new(3, 40), Par::Seq).unwrap();
            let budget = slr.params(); // 3 * 70 + 40 = 250
            assert!(
                slr.history.windows(2).all(|h| h[1] <= h[0] * (1.0 + 1e-5)),
                "{:?}",
                slr.history
            );
            let back = slr.to_dense(Par::Seq).unwrap();
            assert!((rel_frobenius_error(&a, &back).unwrap() - slr.rel_error()).abs() < 1e-6);
            // low-rank alone with the same budget: rank floor(250 / 70) = 3
            let r = budget / (m + n);
            let svd_only = truncated_svd(am, r, Precision::F64, Par::Seq).unwrap();
            let e_svd = rel_frobenius_error(&a, &svd_only.reconstruct(Par::Seq).unwrap()).unwrap();
            // sparse alone with the same budget: top-250 entries
            let sp = Csr::from_topk(am, budget).unwrap();
            let e_sp = rel_frobenius_error(&a, &sp.to_dense()).unwrap();
            let e = slr.rel_error();
            assert!(
                e < 0.5 * e_svd && e < 0.5 * e_sp,
                "seed {seed}: slr {e}, svd {e_svd}, sparse {e_sp}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let a = randn(12, 0);
        let am = MatRef::new(&a, 3, 4).unwrap();
        assert!(sparse_plus_lowrank(am, SlrParams::new(0, 2), Par::Seq).is_err());
        assert!(sparse_plus_lowrank(am, SlrParams::new(4, 2), Par::Seq).is_err());
        assert!(sparse_plus_lowrank(am, SlrParams::new(1, 13), Par::Seq).is_err());
        // nnz = 0 is plain truncated SVD
        let s = sparse_plus_lowrank(am, SlrParams::new(3, 0), Par::Seq).unwrap();
        assert!(s.rel_error() < 1e-5);
    }
}

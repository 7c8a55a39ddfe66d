//! Randomized SVD (Halko, Martinsson and Tropp 2011, algorithms 4.4 and 5.1), on faer.
//!
//! For a rank-r approximation of A (M, N) with l = r + oversample columns:
//!   Y = A Omega                       Omega (N, l) Gaussian, Y (M, l)
//!   Q = norm(Y)                       Q (M, l)
//!   repeat power_iters times:         re-normalize after every product (stable power iteration)
//!     Q = norm(A^T Q)                 (N, l)
//!     Q = norm(A Q)                   (M, l)
//!   norm() is the L factor of a pivoted LU for the intermediate bases (cheap, as in fbpca) and
//!   the thin Q of a Householder QR for the last one, which must be orthonormal.
//!   B = Q^T A                         (l, N)
//!   B = Ub diag(s) V^T                small dense SVD (faer)
//!   U = Q Ub                          (M, l), then keep the first r triplets
//! Cost: (2 + 4 power_iters) GEMMs of M N l flops each, plus O((M + N) l^2) for the QRs and the SVD.
//! The GEMMs run with the caller's `par`; the thin-panel LU/QR and the small SVD run on one thread
//! (their rayon versions were slower at these sizes on the 2-core development machine).
use crate::svd::{Svd, cols_row_major, cols_transposed, faer_thin_svd};
use crate::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use lopper_tensor::{MatRef, Par};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Tunables of [`rsvd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RsvdParams {
    /// Extra sketch columns beyond the rank (Halko's p; 10 is torch.svd_lowrank's default).
    pub oversample: usize,
    /// Power (subspace) iterations; each sharpens the spectrum decay by one power of the ratio.
    pub power_iters: usize,
    /// Seed of the Gaussian test matrix.
    pub seed: u64,
}

impl Default for RsvdParams {
    fn default() -> Self {
        RsvdParams {
            oversample: 10,
            power_iters: 2,
            seed: 0,
        }
    }
}

/// Replaces the columns of `y` (rows, l), rows >= l, by an orthonormal basis of their span
/// (the thin Q of faer's Householder QR).
pub fn orthonormalize(y: &mut Mat<f32>, par: faer::Par) {
    let (m, l) = y.shape();
    if l == 0 || m == 0 {
        return;
    }
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f32>(m, l);
    let mut coeff = Mat::<f32>::zeros(bs, l.min(m));
    let req = faer::dyn_stack::StackReq::any_of(&[
        faer::linalg::qr::no_pivoting::factor::qr_in_place_scratch::<f32>(
            m,
            l,
            bs,
            par,
            Default::default(),
        ),
        faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<
            f32,
        >(m, bs, l),
    ]);
    let mut mem = MemBuffer::new(req);
    faer::linalg::qr::no_pivoting::factor::qr_in_place(
        y.as_mut(),
        coeff.as_mut(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    // q is (m, l): the first l columns of the identity, then Q applied from the left
    let mut q = Mat::<f32>::zeros(m, l);
    for j in 0..l.min(m) {
        q[(j, j)] = 1.0;
    }
    faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        y.as_ref(),
        coeff.as_ref(),
        faer::Conj::No,
        q.as_mut(),
        par,
        MemStack::new(&mut mem),
    );
    *y = q;
}

/// Replaces the columns of `y` (rows, l), rows >= l, by another basis of their span: the unit lower
/// trapezoidal factor of faer's partially pivoted LU, rows permuted back. Cheaper than a QR and
/// well-conditioned enough to normalize the intermediate power iterations (as fbpca does);
/// the last basis is always orthonormalized by QR. When `y` has rank below l with an exactly zero
/// pivot (a zero or exactly low-rank matrix: the LU divides 0 by 0), the basis is orthonormalized
/// by QR instead, which has no division by a pivot.
pub fn lu_normalize(y: &mut Mat<f32>, par: faer::Par) {
    let (m, l) = y.shape();
    if l == 0 || m == 0 {
        return;
    }
    let orig = y.clone();
    let mut perm = vec![0usize; m];
    let mut perm_inv = vec![0usize; m];
    let req = faer::linalg::lu::partial_pivoting::factor::lu_in_place_scratch::<usize, f32>(
        m,
        l,
        par,
        Default::default(),
    );
    let mut mem = MemBuffer::new(req);
    faer::linalg::lu::partial_pivoting::factor::lu_in_place(
        y.as_mut(),
        &mut perm,
        &mut perm_inv,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    // P y = L U: row i of L belongs to row perm[i] of y
    let mut q = Mat::<f32>::zeros(m, l);
    let mut finite = true;
    for i in 0..m {
        for j in 0..l.min(i + 1) {
            let x = if i == j { 1.0 } else { y[(i, j)] };
            finite &= x.is_finite();
            q[(perm[i], j)] = x;
        }
    }
    if finite {
        *y = q;
    } else {
        *y = orig;
        orthonormalize(y, par);
    }
}

/// The power of two that brings the largest |a| into [1, 2) when it lies outside
/// [2^-32, 2^32] (1 otherwise, and for a zero matrix): products with the scaled matrix neither
/// overflow nor underflow in f32, and scaling by a power of two is exact.
fn scale_of(a: &[f32]) -> f32 {
    let amax = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 || (2f32.powi(-32)..=2f32.powi(32)).contains(&amax) {
        return 1.0;
    }
    let e = (amax.log2().floor() as i32).clamp(-126, 126);
    2f32.powi(-e)
}

/// Randomized rank-`r` SVD of `a` (M, N), computed in f32. Returns `r` triplets
/// (`r` clamped to min(M, N)).
///
/// With the defaults (oversample 10, 2 power iterations) the Frobenius error is within a few
/// per mille of the optimum on matrices whose spectrum decays like 1/i.
pub fn rsvd(a: MatRef<'_>, r: usize, params: RsvdParams, par: Par) -> Result<Svd> {
    let (m, n) = (a.rows(), a.cols());
    if r == 0 {
        return Err(Error::invalid("rsvd", "rank must be at least 1"));
    }
    if !a.data().iter().all(|x| x.is_finite()) {
        return Err(Error::NoConvergence {
            op: "rsvd",
            rows: m,
            cols: n,
        });
    }
    let p = m.min(n);
    let r = r.min(p);
    if r == 0 {
        return Ok(Svd {
            rows: m,
            cols: n,
            k: 0,
            u: Vec::new(),
            s: Vec::new(),
            vt: Vec::new(),
        });
    }
    let l = r.saturating_add(params.oversample).min(p);
    let fp = par.to_faer();
    let af = a.as_faer(); // (M, N)
    // every product uses c A, whose largest entry is near 1 when A's is far from it (weights of
    // 1e30 overflowed the QR's squares, 1e-30 underflowed them); the singular values are divided
    // by c at the end
    let c = scale_of(a.data());

    // omega is (N, l), Gaussian
    let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed);
    let omega = Mat::<f32>::from_fn(n, l, |_, _| StandardNormal.sample(&mut rng));
    // y is (M, l) = A omega
    let mut y = Mat::<f32>::zeros(m, l);
    matmul(y.as_mut(), Accum::Replace, af, omega.as_ref(), c, fp);
    // intermediate bases are LU-normalized, the last one orthonormalized (QR)
    let seq = faer::Par::Seq;
    if params.power_iters == 0 {
        orthonormalize(&mut y, seq);
    } else {
        lu_normalize(&mut y, seq);
    }
    let mut z = Mat::<f32>::zeros(n, l);
    for it in 0..params.power_iters {
        // z is (N, l) = A^T y
        matmul(
            z.as_mut(),
            Accum::Replace,
            af.transpose(),
            y.as_ref(),
            c,
            fp,
        );
        lu_normalize(&mut z, seq);
        // y is (M, l) = A z
        matmul(y.as_mut(), Accum::Replace, af, z.as_ref(), c, fp);
        if it + 1 == params.power_iters {
            orthonormalize(&mut y, seq);
        } else {
            lu_normalize(&mut y, seq);
        }
    }
    // bt is (N, l) = A^T Q = B^T; its SVD bt = V diag(s) Ub^T
    let mut bt = Mat::<f32>::zeros(n, l);
    matmul(
        bt.as_mut(),
        Accum::Replace,
        af.transpose(),
        y.as_ref(),
        c,
        fp,
    );
    let (v, s, ub) = faer_thin_svd("rsvd", bt.as_ref(), faer::Par::Seq)?; // v (N, l), ub (l, l)
    // u is (M, l) = Q Ub
    let mut u = Mat::<f32>::zeros(m, l);
    matmul(
        u.as_mut(),
        Accum::Replace,
        y.as_ref(),
        ub.as_ref(),
        1.0f32,
        fp,
    );
    Ok(Svd {
        rows: m,
        cols: n,
        k: r,
        u: cols_row_major(u.as_ref(), r),
        s: s[..r].iter().map(|x| x / f64::from(c)).collect(),
        vt: cols_transposed(v.as_ref(), r),
    })
}

/// The peers' benchmark matrix: `U diag(1 / (1 + i)) V^T` with Haar-random orthogonal U, V
/// (n, n), row-major, and its singular values. Deterministic in `seed`.
pub fn decaying_test_matrix(n: usize, seed: u64, par: Par) -> (Vec<f32>, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut u = Mat::<f32>::from_fn(n, n, |_, _| StandardNormal.sample(&mut rng));
    let mut v = Mat::<f32>::from_fn(n, n, |_, _| StandardNormal.sample(&mut rng));
    orthonormalize(&mut u, par.to_faer());
    orthonormalize(&mut v, par.to_faer());
    let s: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64)).collect();
    for j in 0..n {
        for i in 0..n {
            u[(i, j)] *= s[j] as f32;
        }
    }
    let mut a = vec![0.0f32; n * n];
    let av = faer::MatMut::from_row_major_slice_mut(&mut a, n, n);
    matmul(
        av,
        Accum::Replace,
        u.as_ref(),
        v.as_ref().transpose(),
        1.0f32,
        par.to_faer(),
    );
    (a, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::{Precision, optimal_rel_error, rel_frobenius_error, svd};
    use crate::testutil::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// On an exactly rank-q matrix, rSVD with r >= q recovers it (to rounding), with orthonormal U, V.
        #[test]
        fn exact_on_low_rank_input(m in 2usize..40, n in 2usize..40, q in 1usize..6, extra in 0usize..4,
                                   seed in 0u64..500) {
            let q = q.min(m).min(n);
            let l = randn(m * q, seed);
            let rr = randn(q * n, seed + 7);
            let a: Vec<f32> = matmul_ref(&l, &rr, m, q, n).into_iter().map(|x| x as f32).collect();
            let r = (q + extra).min(m.min(n));
            let params = RsvdParams { oversample: 3, power_iters: 1, seed };
            let s = rsvd(MatRef::new(&a, m, n).unwrap(), r, params, Par::Seq).unwrap();
            prop_assert_eq!(s.k, r);
            let rec = s.reconstruct(Par::Seq).unwrap();
            let e = rel_frobenius_error(&a, &rec).unwrap();
            prop_assert!(e < 1e-4, "rel error {e}");
            prop_assert!(orth_defect(&s.u, m, r, true) < 1e-3);
            prop_assert!(orth_defect(&s.vt, r, n, false) < 1e-3);
        }
    }

    #[test]
    fn near_optimal_on_decaying_spectrum() {
        // the peers' matrix at a test-sized n: error within 1% of the Eckart-Young optimum
        let n = 160;
        let (a, s) = decaying_test_matrix(n, 1, Par::Seq);
        let full = svd(MatRef::new(&a, n, n).unwrap(), Precision::F64, Par::Seq).unwrap();
        for (x, y) in full.s.iter().zip(&s) {
            assert!((x - y).abs() < 1e-5, "test matrix spectrum {x} vs {y}");
        }
        let r = 16;
        let opt = optimal_rel_error(&full.s, r);
        let got = rsvd(
            MatRef::new(&a, n, n).unwrap(),
            r,
            RsvdParams::default(),
            Par::Seq,
        )
        .unwrap();
        let e = rel_frobenius_error(&a, &got.reconstruct(Par::Seq).unwrap()).unwrap();
        assert!(
            e <= 1.01 * opt && e >= opt * (1.0 - 1e-6),
            "rsvd {e} vs optimum {opt}"
        );
        // without power iterations the error is measurably worse: the iterations do something
        let p0 = RsvdParams {
            power_iters: 0,
            ..Default::default()
        };
        let got0 = rsvd(MatRef::new(&a, n, n).unwrap(), r, p0, Par::Seq).unwrap();
        let e0 = rel_frobenius_error(&a, &got0.reconstruct(Par::Seq).unwrap()).unwrap();
        assert!(e0 > e, "no power iterations {e0} vs two {e}");
    }

    #[test]
    fn exactly_rank_deficient_and_far_scaled_matrices_factor() {
        // an exactly zero pivot in the power iterations' LU (a zero matrix, a zero row block, an
        // exact rank-1 matrix) gave NaN and "did not converge"; so did entries of 1e30 (the QR's
        // squares overflowed), and entries of 1e-30 lost their accuracy (the squares underflowed)
        let n = 8;
        let u: Vec<f32> = (1..=n).map(|x| x as f32).collect();
        let rank1: Vec<f32> = u
            .iter()
            .flat_map(|a| u.iter().map(move |b| a * b))
            .collect();
        let mut one = vec![0.0f32; n * n];
        one[0] = 1.0;
        let mut half = randn(n * n, 3);
        half[n * n / 2..].fill(0.0);
        let base = randn(n * n, 4);
        let cases: Vec<(&str, Vec<f32>)> = vec![
            ("zero", vec![0.0; n * n]),
            ("one entry", one),
            ("rank 1", rank1),
            ("zero rows", half),
            ("1e30", base.iter().map(|x| x * 1e30).collect()),
            ("1e-30", base.iter().map(|x| x * 1e-30).collect()),
        ];
        for (what, a) in cases {
            let m = MatRef::new(&a, n, n).unwrap();
            let full = svd(m, Precision::F64, Par::Seq).unwrap();
            let opt = optimal_rel_error(&full.s, 4);
            for power_iters in [0, 1, 2] {
                let p = RsvdParams {
                    power_iters,
                    ..Default::default()
                };
                let got = rsvd(m, 4, p, Par::Seq).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(got.s.iter().all(|x| x.is_finite()), "{what}: {:?}", got.s);
                for (x, y) in got.s.iter().zip(&full.s) {
                    assert!(
                        (x - y).abs() <= 1e-4 * full.s[0] + 1e-45,
                        "{what}: {x} vs {y}"
                    );
                }
                if full.s[0] > 0.0 {
                    let e = rel_frobenius_error(&a, &got.reconstruct(Par::Seq).unwrap()).unwrap();
                    assert!(e <= opt + 1e-3, "{what}: rel error {e} vs optimum {opt}");
                }
            }
        }
    }

    #[test]
    fn oversample_beyond_usize_is_clamped() {
        // r + oversample overflowed (a panic in debug builds); the sketch is capped at min(M, N)
        let a = randn(12, 1);
        let p = RsvdParams {
            oversample: usize::MAX,
            ..Default::default()
        };
        let s = rsvd(MatRef::new(&a, 3, 4).unwrap(), 2, p, Par::Seq).unwrap();
        assert_eq!(s.k, 2);
    }

    #[test]
    fn bad_input() {
        let a = randn(12, 1);
        assert!(
            rsvd(
                MatRef::new(&a, 3, 4).unwrap(),
                0,
                RsvdParams::default(),
                Par::Seq
            )
            .is_err()
        );
        let mut b = a.clone();
        b[0] = f32::INFINITY;
        assert!(
            rsvd(
                MatRef::new(&b, 3, 4).unwrap(),
                2,
                RsvdParams::default(),
                Par::Seq
            )
            .is_err()
        );
        // rank above min(M, N) is clamped
        let s = rsvd(
            MatRef::new(&a, 3, 4).unwrap(),
            9,
            RsvdParams::default(),
            Par::Seq,
        )
        .unwrap();
        assert_eq!(s.k, 3);
    }
}

//! GaLore-style gradient projection (Zhao et al. 2024) as an optimizer building block.
//!
//! For a weight W (M, N) with gradient G (M, N):
//!   every `update_every` steps:  P = top-r left singular vectors of G      P (M, r)
//!   R = P^T G                                                              (r, N)
//!   Adam in the small space:     m = b1 m + (1 - b1) R,  v = b2 v + (1 - b2) R^2   (r, N)
//!                                N = m_hat / (sqrt(v_hat) + eps)
//!   W -= lr * scale * P N                                                  back to (M, N)
//! The optimizer state is P plus two (r, N) moments instead of two (M, N) moments.
//! The trainer drives it through [`GradientStep`]; lopper-train will wrap it for its layers.
use crate::svd::{Precision, truncated_svd};
use crate::{Error, Result};
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};

/// One optimizer step on one weight matrix, given its gradient: what a trainer calls.
pub trait GradientStep {
    /// Updates `w` (M, N) in place from the gradient `g` (M, N).
    fn step(&mut self, w: MatMut<'_>, g: MatRef<'_>, par: Par) -> Result<()>;
}

/// Tunables of [`GaloreAdam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaloreParams {
    /// Rank r of the projection.
    pub rank: usize,
    /// Refresh the projection every this many steps (GaLore's T; 200 in the paper).
    pub update_every: usize,
    /// Learning rate.
    pub lr: f32,
    /// Adam beta1.
    pub beta1: f32,
    /// Adam beta2.
    pub beta2: f32,
    /// Adam epsilon.
    pub eps: f32,
    /// Scale of the projected-back update (GaLore's alpha, 0.25 in the paper).
    pub scale: f32,
}

impl Default for GaloreParams {
    fn default() -> Self {
        GaloreParams {
            rank: 128,
            update_every: 200,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            scale: 0.25,
        }
    }
}

/// Adam whose state lives in the rank-r subspace of the gradient's top left singular vectors.
#[derive(Clone, Debug)]
pub struct GaloreAdam {
    params: GaloreParams,
    rows: usize,
    cols: usize,
    rank: usize,
    /// P, (M, r) row-major; empty before the first step.
    proj: Vec<f32>,
    /// First moment, (r, N).
    m: Vec<f32>,
    /// Second moment, (r, N).
    v: Vec<f32>,
    steps: u64,
}

impl GaloreAdam {
    /// State for a weight of shape (rows, cols); the rank is clamped to min(rows, cols).
    pub fn new(rows: usize, cols: usize, params: GaloreParams) -> Result<GaloreAdam> {
        if params.rank == 0 || params.update_every == 0 || rows == 0 || cols == 0 {
            return Err(Error::invalid(
                "GaloreAdam::new",
                format!(
                    "rank {} and update_every {} for a {rows}x{cols} weight: all must be >= 1",
                    params.rank, params.update_every
                ),
            ));
        }
        if !(params.lr.is_finite() && params.lr > 0.0) {
            return Err(Error::invalid(
                "GaloreAdam::new",
                format!("lr = {}", params.lr),
            ));
        }
        // Adam's constants: outside these ranges (NaN included) every update is NaN or diverges
        let (b1, b2, eps, scale) = (params.beta1, params.beta2, params.eps, params.scale);
        if !((0.0..1.0).contains(&b1)
            && (0.0..1.0).contains(&b2)
            && eps.is_finite()
            && eps > 0.0
            && scale.is_finite())
        {
            return Err(Error::invalid(
                "GaloreAdam::new",
                format!(
                    "beta1 = {b1}, beta2 = {b2}, eps = {eps}, scale = {scale}: need betas in [0, 1), eps > 0 and a finite scale"
                ),
            ));
        }
        let rank = params.rank.min(rows).min(cols);
        // the two moments (r, N) and the projection (M, r), from claimed sizes: refused when they
        // cannot fit, never an abort
        let n = lopper_tensor::mem::elements("GaloreAdam::new", &[rank, rows.max(cols), 3])?;
        lopper_tensor::mem::check_bytes(
            &format!("GaloreAdam::new: rank-{rank} state of a {rows}x{cols} weight"),
            n,
            4,
        )?;
        Ok(GaloreAdam {
            params,
            rows,
            cols,
            rank,
            proj: Vec::new(),
            m: vec![0.0; rank * cols],
            v: vec![0.0; rank * cols],
            steps: 0,
        })
    }

    /// Floats of optimizer state kept: r M (projection) + 2 r N (moments).
    pub fn state_len(&self) -> usize {
        self.rank * self.rows + 2 * self.rank * self.cols
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The current projection P (M, r), empty before the first step.
    pub fn projection(&self) -> &[f32] {
        &self.proj
    }
}

impl GradientStep for GaloreAdam {
    fn step(&mut self, mut w: MatMut<'_>, g: MatRef<'_>, par: Par) -> Result<()> {
        let (mm, n, r) = (self.rows, self.cols, self.rank);
        if w.rows() != mm || w.cols() != n || g.rows() != mm || g.cols() != n {
            return Err(Error::shape(
                "GaloreAdam::step",
                format!(
                    "state is for {mm}x{n}, weight is {}x{}, gradient is {}x{}",
                    w.rows(),
                    w.cols(),
                    g.rows(),
                    g.cols()
                ),
            ));
        }
        let p = &self.params;
        if self.steps.is_multiple_of(p.update_every as u64) {
            // refresh P from the current gradient; the moments are kept (as in GaLore)
            self.proj = truncated_svd(g, r, Precision::F32, par)?.u;
        }
        self.steps += 1;
        // rg is (r, N) = P^T G
        let mut rg = vec![0.0f32; r * n];
        gemm(
            MatMut::new(&mut rg, r, n)?,
            MatRef::new(&self.proj, mm, r)?,
            Transpose::Yes,
            g,
            Transpose::No,
            1.0,
            0.0,
            par,
        )?;
        let t = self.steps as i32;
        let c1 = 1.0 - p.beta1.powi(t);
        let c2 = 1.0 - p.beta2.powi(t);
        for ((x, m), v) in rg.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            *m = p.beta1 * *m + (1.0 - p.beta1) * *x;
            *v = p.beta2 * *v + (1.0 - p.beta2) * *x * *x;
            *x = (*m / c1) / ((*v / c2).sqrt() + p.eps);
        }
        // w -= lr * scale * P N
        gemm(
            w.rb_mut(),
            MatRef::new(&self.proj, mm, r)?,
            Transpose::No,
            MatRef::new(&rg, r, n)?,
            Transpose::No,
            -p.lr * p.scale,
            1.0,
            par,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    /// 0.5 ||W X - Y||^2 and its gradient (W X - Y) X^T for W (M, N), X (N, T), Y (M, T).
    fn loss_grad(w: &[f32], x: &[f32], y: &[f32], m: usize, n: usize, t: usize) -> (f64, Vec<f32>) {
        let wx = matmul_ref(w, x, m, n, t);
        let res: Vec<f32> = wx
            .iter()
            .zip(y)
            .map(|(&a, &b)| (a - b as f64) as f32)
            .collect();
        let loss = 0.5 * res.iter().map(|&e| e as f64 * e as f64).sum::<f64>();
        let xt: Vec<f32> = (0..t)
            .flat_map(|j| (0..n).map(|i| x[i * t + j]).collect::<Vec<_>>())
            .collect();
        let g = matmul_ref(&res, &xt, m, t, n)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        (loss, g)
    }

    fn train(update_every: usize, steps: usize) -> (f64, f64, usize) {
        let (m, n, t) = (24, 16, 32);
        let w_star = randn(m * n, 1);
        let x = randn(n * t, 2);
        let y: Vec<f32> = matmul_ref(&w_star, &x, m, n, t)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let mut w = vec![0.0f32; m * n];
        let params = GaloreParams {
            rank: 4,
            update_every,
            lr: 0.05,
            scale: 1.0,
            ..Default::default()
        };
        let mut opt = GaloreAdam::new(m, n, params).unwrap();
        let (l0, _) = loss_grad(&w, &x, &y, m, n, t);
        for _ in 0..steps {
            let (_, g) = loss_grad(&w, &x, &y, m, n, t);
            opt.step(
                MatMut::new(&mut w, m, n).unwrap(),
                MatRef::new(&g, m, n).unwrap(),
                Par::Seq,
            )
            .unwrap();
        }
        let (l1, _) = loss_grad(&w, &x, &y, m, n, t);
        (l0, l1, opt.state_len())
    }

    #[test]
    fn decreases_least_squares_loss_with_small_state() {
        let (l0, l1, state) = train(20, 400);
        assert!(l1 < 0.05 * l0, "loss {l0} -> {l1}");
        // state: P (24x4) + two (4x16) moments, against 2 x 24x16 for full Adam
        assert_eq!(state, 4 * 24 + 2 * 4 * 16);
        assert!(state < 2 * 24 * 16);
        // never refreshing the subspace leaves the loss stuck in the first rank-4 subspace
        let (_, stuck, _) = train(1_000_000, 400);
        assert!(
            l1 < 0.5 * stuck,
            "refreshing {l1} vs frozen subspace {stuck}"
        );
    }

    #[test]
    fn adam_constants_out_of_range_are_errors() {
        // these were accepted and turned every update into NaN
        for p in [
            GaloreParams {
                beta1: f32::NAN,
                ..Default::default()
            },
            GaloreParams {
                beta2: 1.0,
                ..Default::default()
            },
            GaloreParams {
                eps: -1.0,
                ..Default::default()
            },
            GaloreParams {
                eps: 0.0,
                ..Default::default()
            },
            GaloreParams {
                scale: f32::INFINITY,
                ..Default::default()
            },
        ] {
            let e = GaloreAdam::new(4, 4, p).unwrap_err();
            assert!(e.to_string().contains("need betas in [0, 1)"), "{e}");
        }
        assert!(GaloreAdam::new(4, 4, GaloreParams::default()).is_ok());
    }

    #[test]
    fn state_beyond_memory_is_an_error() {
        // rank 2^40 of a 2^40 x 2^40 weight: 2^80 floats of state; refused, not an abort
        let p = GaloreParams {
            rank: 1 << 40,
            ..Default::default()
        };
        let e = GaloreAdam::new(1 << 40, 1 << 40, p).unwrap_err();
        assert!(e.to_string().contains("GaloreAdam::new"), "{e}");
        if lopper_tensor::mem::physical_memory().is_some_and(|m| m < 1 << 50) {
            let p = GaloreParams {
                rank: 1 << 20,
                ..Default::default()
            };
            let e = GaloreAdam::new(1 << 20, 1 << 20, p).unwrap_err();
            assert!(
                e.to_string()
                    .contains("rank-1048576 state of a 1048576x1048576 weight"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(
            GaloreAdam::new(
                4,
                4,
                GaloreParams {
                    rank: 0,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            GaloreAdam::new(
                4,
                4,
                GaloreParams {
                    update_every: 0,
                    ..Default::default()
                }
            )
            .is_err()
        );
        let mut o = GaloreAdam::new(
            4,
            4,
            GaloreParams {
                rank: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let mut w = vec![0.0; 12];
        let g = vec![0.0; 12];
        assert!(
            o.step(
                MatMut::new(&mut w, 3, 4).unwrap(),
                MatRef::new(&g, 3, 4).unwrap(),
                Par::Seq
            )
            .is_err()
        );
    }
}

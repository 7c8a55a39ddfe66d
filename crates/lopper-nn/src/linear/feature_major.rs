//! Feature-major products of a [`Linear`]: activations stored transposed, `x^T (K, N)` and
//! `y^T (M, N)`, the layout the sparse kernels work in. Between two sparse layers (and an
//! elementwise op) a model can stay feature-major and skip the transposes of the row-major path:
//!   forward  `y^T (M, N) = W x^T + b`;
//!   backward `dW += dy^T x` (sddmm at the pattern for Csr/2:4), `dx^T (K, N) = W^T dy^T`.
//! Csr, Sparse24, Dense and Masked run natively in f32; LowRank, Lora and bf16 mode transpose to the
//! row-major path.
use super::{Linear, N, T};
use crate::kernels::{add_row_sums_par, gemm_nx, transpose};
use crate::util::ensure;
use crate::{Precision, Result, Weight};
use lopper_sparse::kernels::spmm_t_with;
use lopper_sparse::{sddmm_add, spmm, spmm_24};
use lopper_tensor::{MatMut, MatRef, gemm};

impl Linear {
    /// Whether this layer runs feature-major without transposes (Csr, Sparse24, Dense, Masked).
    pub fn feature_major_native(&self) -> bool {
        matches!(
            self.weight,
            Weight::Csr { .. }
                | Weight::Sparse24 { .. }
                | Weight::Dense { .. }
                | Weight::Masked { .. }
        )
    }

    /// `y^T (out, n) = W x^T (in, n) + b`, feature-major (see the module doc).
    pub fn forward_t(&mut self, xt: &[f32], n: usize, yt: &mut [f32]) -> Result<()> {
        let (m, k, par, how) = (self.out_features, self.in_features, self.par, self.threads);
        self.check("input", xt.len(), n, k)?;
        self.check("output", yt.len(), n, m)?;
        if n == 0 {
            return Ok(());
        }
        if !self.feature_major_native() || self.precision == Precision::Bf16 {
            // through the row-major path (which applies the bf16 rounding)
            let (mut x, mut y) = (
                std::mem::take(&mut self.fm.0),
                std::mem::take(&mut self.fm.1),
            );
            ensure(&mut x, n * k);
            ensure(&mut y, n * m);
            transpose(xt, k, n, &mut x, par);
            let r = self.forward(&x, n, &mut y);
            transpose(&y, n, m, yt, par);
            self.fm = (x, y);
            return r;
        }
        let xm = MatRef::new(xt, k, n)?;
        match &mut self.weight {
            Weight::Dense { w, .. } => gemm_nx(yt, w, xm, N, m, k, 1.0, 0.0, par, how)?, // W x^T
            Weight::Masked { w, mask, .. } => {
                lopper_tensor::ops::apply_mask(w, mask)?;
                gemm_nx(yt, w, xm, N, m, k, 1.0, 0.0, par, how)?
            }
            Weight::Csr { w, .. } => spmm(w, xm, MatMut::new(yt, m, n)?, par)?,
            Weight::Sparse24 { w, .. } => spmm_24(w, xm, MatMut::new(yt, m, n)?, par)?,
            Weight::LowRank { .. } | Weight::Lora { .. } => unreachable!("checked above"),
        }
        self.add_bias_t(yt, n);
        Ok(())
    }

    /// `y^T (out, n) += b` (each feature's row gets its bias), when the layer has one.
    pub(crate) fn add_bias_t(&self, yt: &mut [f32], n: usize) {
        if let Some((b, _)) = &self.bias {
            for (row, &bi) in yt.chunks_exact_mut(n).zip(b) {
                row.iter_mut().for_each(|v| *v += bi);
            }
        }
    }

    /// Given the forward's `x^T (in, n)` and `dy^T (out, n)`: parameter gradients `+=`,
    /// `dx^T (in, n) =` the input gradient, feature-major.
    pub fn backward_t(&mut self, xt: &[f32], dyt: &[f32], n: usize, dxt: &mut [f32]) -> Result<()> {
        let (m, k, par) = (self.out_features, self.in_features, self.par);
        self.check("input", xt.len(), n, k)?;
        self.check("output gradient", dyt.len(), n, m)?;
        self.check("input gradient", dxt.len(), n, k)?;
        if n == 0 {
            return Ok(());
        }
        if !self.feature_major_native() || self.precision == Precision::Bf16 {
            let mut bufs = std::mem::take(&mut self.fm);
            let mut dx = std::mem::take(&mut self.s.dh);
            ensure(&mut bufs.0, n * k);
            ensure(&mut bufs.1, n * m);
            ensure(&mut dx, n * k);
            transpose(xt, k, n, &mut bufs.0, par);
            transpose(dyt, m, n, &mut bufs.1, par);
            let r = self.backward(&bufs.0, &bufs.1, n, &mut dx);
            transpose(&dx, n, k, dxt, par);
            self.fm = bufs;
            self.s.dh = dx;
            return r;
        }
        let (xm, dym) = (MatRef::new(xt, k, n)?, MatRef::new(dyt, m, n)?);
        if let Some((_, db)) = &mut self.bias {
            add_row_sums_par(dyt, n, db, par); // db (M) += row sums of dy^T
        }
        if let Some(g) = &mut self.dense_grad {
            gemm(MatMut::new(g, m, k)?, dym, N, xm, T, 1.0, 1.0, par)?; // G += dy^T x
        }
        match &mut self.weight {
            Weight::Dense { w, dw } | Weight::Masked { w, dw, .. } => {
                gemm(MatMut::new(dw, m, k)?, dym, N, xm, T, 1.0, 1.0, par)?; // dW += dy^T x
                gemm(
                    MatMut::new(dxt, k, n)?,
                    MatRef::new(w, m, k)?,
                    T,
                    dym,
                    N,
                    1.0,
                    0.0,
                    par,
                )?; // dx^T = W^T dy^T
            }
            Weight::Csr { w, wt, dw } => {
                wt.refresh_par(w, par)?;
                sddmm_add(w, dym, xm, dw, par)?; // dW[p=(i,j)] += dy^T[i] . x^T[j]
                spmm_t_with(wt, dym, MatMut::new(dxt, k, n)?, par)?; // dx^T = W^T dy^T
            }
            Weight::Sparse24 { w, mirror, wt, dw } => {
                mirror.values_mut().copy_from_slice(w.values());
                wt.refresh_par(mirror, par)?;
                sddmm_add(mirror, dym, xm, dw, par)?;
                spmm_t_with(wt, dym, MatMut::new(dxt, k, n)?, par)?;
            }
            Weight::LowRank { .. } | Weight::Lora { .. } => unreachable!("checked above"),
        }
        if let Weight::Masked { dw, mask, .. } = &mut self.weight {
            lopper_tensor::ops::apply_mask(dw, mask)?;
        }
        Ok(())
    }
}

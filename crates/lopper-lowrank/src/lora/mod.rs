//! LoRA (Hu et al. 2021): a frozen base W (M, K) plus a trainable update `scale * B A`, with
//! A (r, K), B (M, r), scale = alpha / r. B starts at zero, so the adapted layer starts equal to
//! the base; A starts uniform in +-1/sqrt(K) (PEFT's kaiming_uniform(a = sqrt 5)).
//!
//! The base is dense or sparse (lopper-sparse's CSR, multiplied with its spmm kernels).
//!
//! Forward with activations as rows, X (T, K):  Y = X W^T + scale * (X A^T) B^T      (T, M)
//! Backward given dY (T, M):  h = X A^T (T, r), g = dY B (T, r)
//!   dB = scale * dY^T h   (M, r)      dA = scale * g^T X   (r, K)
//!   dX = dY W + scale * g A           (T, K)
//! `merge` folds scale * B A into the base (inference at the dense cost, no extra products);
//! `unmerge` subtracts it again. Both report the change they made to the stored weights.
//!
//! Adapters are saved on their own as safetensors in PEFT's naming: `<prefix>.lora_A.weight` (r, K)
//! and `<prefix>.lora_B.weight` (M, r); alpha goes into the metadata as `<prefix>.lora_alpha`.
use crate::{Error, Result};

mod io;
#[cfg(test)]
mod tests;

pub use io::{load_adapters, save_adapters};
use lopper_sparse::Csr;
use lopper_tensor::{MatMut, MatRef, Par, Tensor, Transpose, gemm};
use rand::{Rng, SeedableRng};

/// The trainable part of a LoRA layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    /// Rows M of the adapted weight.
    pub rows: usize,
    /// Columns K of the adapted weight.
    pub cols: usize,
    /// Rank r.
    pub rank: usize,
    /// alpha; the update is scaled by alpha / r.
    pub alpha: f32,
    /// A, (r, K) row-major.
    pub a: Vec<f32>,
    /// B, (M, r) row-major.
    pub b: Vec<f32>,
}

/// Gradients of [`LoraLinear::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoraGrads {
    /// dL/dA, (r, K).
    pub da: Vec<f32>,
    /// dL/dB, (M, r).
    pub db: Vec<f32>,
    /// dL/dX, (T, K).
    pub dx: Vec<f32>,
}

/// What a merge or unmerge changed in the stored base weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MergeReport {
    /// max |W_after - W_before| over the elements.
    pub max_abs_change: f32,
    /// ||W_after - W_before||_F.
    pub fro_change: f64,
    /// Unmerge onto a sparse base: largest |value| left outside the base's pattern (rounding
    /// residue) that was dropped to restore the CSR base; 0 otherwise.
    pub off_pattern_max: f32,
}

/// (rows, cols) row-major -> (cols, rows) row-major.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = x[i * cols + j];
        }
    }
    out
}

fn gemm_into(
    c: &mut [f32],
    (m, n): (usize, usize),
    a: (&[f32], usize, usize, Transpose),
    b: (&[f32], usize, usize, Transpose),
    alpha: f32,
    beta: f32,
    par: Par,
) -> Result<()> {
    gemm(
        MatMut::new(c, m, n)?,
        MatRef::new(a.0, a.1, a.2)?,
        a.3,
        MatRef::new(b.0, b.1, b.2)?,
        b.3,
        alpha,
        beta,
        par,
    )?;
    Ok(())
}

impl LoraAdapter {
    /// A fresh adapter: A uniform in +-1/sqrt(K) from `seed`, B = 0.
    pub fn new(
        rows: usize,
        cols: usize,
        rank: usize,
        alpha: f32,
        seed: u64,
    ) -> Result<LoraAdapter> {
        if rank == 0 || rows == 0 || cols == 0 {
            return Err(Error::invalid(
                "LoraAdapter::new",
                format!("rank {rank} for a {rows}x{cols} weight: all must be at least 1"),
            ));
        }
        if !alpha.is_finite() {
            return Err(Error::invalid(
                "LoraAdapter::new",
                format!("alpha = {alpha}"),
            ));
        }
        // A (r, K) and B (M, r) from claimed sizes: refused when they cannot fit, never an abort
        for (what, a, b) in [("A", rank, cols), ("B", rows, rank)] {
            let n = lopper_tensor::mem::elements(&format!("LoraAdapter::new: {what}"), &[a, b])?;
            lopper_tensor::mem::check_bytes(
                &format!("LoraAdapter::new: {what} ({a}x{b}) of a rank-{rank} adapter"),
                n,
                4,
            )?;
        }
        let bound = 1.0 / (cols as f32).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a = (0..rank * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Ok(LoraAdapter {
            rows,
            cols,
            rank,
            alpha,
            a,
            b: vec![0.0; rows * rank],
        })
    }

    /// From A (r, K) and B (M, r); shapes are checked.
    pub fn from_parts(a: &Tensor, b: &Tensor, alpha: f32) -> Result<LoraAdapter> {
        let (r, k) = a.dims2("LoraAdapter::from_parts (A)")?;
        let (m, r2) = b.dims2("LoraAdapter::from_parts (B)")?;
        if r != r2 || r == 0 {
            return Err(Error::shape(
                "LoraAdapter::from_parts",
                format!("A is {r}x{k}, B is {m}x{r2}: ranks must agree and be >= 1"),
            ));
        }
        // as in `new`: a NaN or infinite alpha (e.g. "NaN" in a file's metadata) would make every
        // output NaN
        if !alpha.is_finite() {
            return Err(Error::invalid(
                "LoraAdapter::from_parts",
                format!("alpha = {alpha}"),
            ));
        }
        Ok(LoraAdapter {
            rows: m,
            cols: k,
            rank: r,
            alpha,
            a: a.to_f32_vec(),
            b: b.to_f32_vec(),
        })
    }

    /// alpha / r.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Trainable parameters: r (M + K).
    pub fn params(&self) -> usize {
        self.rank * (self.rows + self.cols)
    }

    /// The dense update scale * B A, (M, K).
    pub fn delta(&self, par: Par) -> Result<Vec<f32>> {
        let (m, r, k) = (self.rows, self.rank, self.cols);
        let mut d = vec![0.0f32; m * k];
        gemm_into(
            &mut d,
            (m, k),
            (&self.b, m, r, Transpose::No),
            (&self.a, r, k, Transpose::No),
            self.scale(),
            0.0,
            par,
        )?;
        Ok(d)
    }
}

/// The frozen base weight of a LoRA layer, (M, K) row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    /// A dense weight.
    Dense(Vec<f32>),
    /// A sparse weight; products go through lopper-sparse's spmm. Merging turns it dense (the
    /// pattern is kept) and unmerging restores the CSR.
    Sparse(Csr),
}

/// A linear layer `Y = X (W + scale B A)^T` with a frozen base W and a trainable adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraLinear {
    base: Base,
    adapter: LoraAdapter,
    merged: bool,
    /// The pattern of a sparse base while merged (values unused).
    pattern: Option<Csr>,
}

impl LoraLinear {
    /// A layer over a frozen dense base W (M, K) with a fresh adapter of rank `rank`.
    pub fn new(base: &Tensor, rank: usize, alpha: f32, seed: u64) -> Result<LoraLinear> {
        let (m, k) = base.dims2("LoraLinear::new")?;
        let adapter = LoraAdapter::new(m, k, rank, alpha, seed)?;
        Ok(LoraLinear {
            base: Base::Dense(base.to_f32_vec()),
            adapter,
            merged: false,
            pattern: None,
        })
    }

    /// A layer over `base` with an existing adapter; shapes are checked.
    pub fn with_adapter(base: Base, adapter: LoraAdapter) -> Result<LoraLinear> {
        let (rows, cols) = match &base {
            Base::Dense(w) => (w.len(), 1),
            Base::Sparse(c) => (c.rows(), c.cols()),
        };
        let ok = match &base {
            Base::Dense(w) => w.len() == adapter.rows * adapter.cols,
            Base::Sparse(c) => (c.rows(), c.cols()) == (adapter.rows, adapter.cols),
        };
        if !ok {
            return Err(Error::shape(
                "LoraLinear::with_adapter",
                format!(
                    "base is {rows}x{cols} (dense: elements x 1), adapter is for {}x{}",
                    adapter.rows, adapter.cols
                ),
            ));
        }
        Ok(LoraLinear {
            base,
            adapter,
            merged: false,
            pattern: None,
        })
    }

    /// The adapter (A, B, alpha).
    pub fn adapter(&self) -> &LoraAdapter {
        &self.adapter
    }
    /// The adapter mutably, for an optimizer step (not allowed while merged).
    pub fn adapter_mut(&mut self) -> Result<&mut LoraAdapter> {
        if self.merged {
            return Err(Error::invalid(
                "LoraLinear::adapter_mut",
                "unmerge before training the adapter",
            ));
        }
        Ok(&mut self.adapter)
    }
    /// The base as stored now (with the update folded in when merged).
    pub fn base(&self) -> &Base {
        &self.base
    }
    /// Whether the update is folded into the base.
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Y (T, M) for X (T, K).
    pub fn forward(&self, x: MatRef<'_>, par: Par) -> Result<Vec<f32>> {
        let a = &self.adapter;
        let (m, k, r, t) = (a.rows, a.cols, a.rank, x.rows());
        if x.cols() != k {
            return Err(Error::shape(
                "LoraLinear::forward",
                format!("W is {m}x{k}, X is {t}x{}", x.cols()),
            ));
        }
        let mut y = vec![0.0f32; t * m];
        match &self.base {
            Base::Dense(w) => {
                gemm_into(
                    &mut y,
                    (t, m),
                    (x.data(), t, k, Transpose::No),
                    (w, m, k, Transpose::Yes),
                    1.0,
                    0.0,
                    par,
                )?;
            }
            Base::Sparse(w) => {
                // Y^T (M, T) = W X^T
                let xt = transpose(x.data(), t, k);
                let mut yt = vec![0.0f32; m * t];
                lopper_sparse::spmm(w, MatRef::new(&xt, k, t)?, MatMut::new(&mut yt, m, t)?, par)?;
                y = transpose(&yt, m, t);
            }
        }
        if !self.merged {
            // h is (T, r) = X A^T; y += scale * h B^T
            let mut h = vec![0.0f32; t * r];
            gemm_into(
                &mut h,
                (t, r),
                (x.data(), t, k, Transpose::No),
                (&a.a, r, k, Transpose::Yes),
                1.0,
                0.0,
                par,
            )?;
            gemm_into(
                &mut y,
                (t, m),
                (&h, t, r, Transpose::No),
                (&a.b, m, r, Transpose::Yes),
                a.scale(),
                1.0,
                par,
            )?;
        }
        Ok(y)
    }

    /// Gradients of A, B and X for X (T, K), dY (T, M). Not allowed while merged.
    pub fn backward(&self, x: MatRef<'_>, dy: MatRef<'_>, par: Par) -> Result<LoraGrads> {
        if self.merged {
            return Err(Error::invalid(
                "LoraLinear::backward",
                "unmerge before training the adapter",
            ));
        }
        let a = &self.adapter;
        let (m, k, r, t) = (a.rows, a.cols, a.rank, x.rows());
        if x.cols() != k || dy.rows() != t || dy.cols() != m {
            return Err(Error::shape(
                "LoraLinear::backward",
                format!(
                    "W is {m}x{k}, X is {t}x{}, dY is {}x{}",
                    x.cols(),
                    dy.rows(),
                    dy.cols()
                ),
            ));
        }
        let s = a.scale();
        let mut h = vec![0.0f32; t * r];
        gemm_into(
            &mut h,
            (t, r),
            (x.data(), t, k, Transpose::No),
            (&a.a, r, k, Transpose::Yes),
            1.0,
            0.0,
            par,
        )?;
        let mut g = vec![0.0f32; t * r];
        gemm_into(
            &mut g,
            (t, r),
            (dy.data(), t, m, Transpose::No),
            (&a.b, m, r, Transpose::No),
            1.0,
            0.0,
            par,
        )?;
        let mut db = vec![0.0f32; m * r];
        gemm_into(
            &mut db,
            (m, r),
            (dy.data(), t, m, Transpose::Yes),
            (&h, t, r, Transpose::No),
            s,
            0.0,
            par,
        )?;
        let mut da = vec![0.0f32; r * k];
        gemm_into(
            &mut da,
            (r, k),
            (&g, t, r, Transpose::Yes),
            (x.data(), t, k, Transpose::No),
            s,
            0.0,
            par,
        )?;
        let mut dx = vec![0.0f32; t * k];
        match &self.base {
            Base::Dense(w) => {
                gemm_into(
                    &mut dx,
                    (t, k),
                    (dy.data(), t, m, Transpose::No),
                    (w, m, k, Transpose::No),
                    1.0,
                    0.0,
                    par,
                )?;
            }
            Base::Sparse(w) => {
                // dX^T (K, T) = W^T dY^T
                let dyt = transpose(dy.data(), t, m);
                let mut dxt = vec![0.0f32; k * t];
                lopper_sparse::spmm_t(
                    w,
                    MatRef::new(&dyt, m, t)?,
                    MatMut::new(&mut dxt, k, t)?,
                    par,
                )?;
                dx = transpose(&dxt, k, t);
            }
        }
        gemm_into(
            &mut dx,
            (t, k),
            (&g, t, r, Transpose::No),
            (&a.a, r, k, Transpose::No),
            s,
            1.0,
            par,
        )?;
        Ok(LoraGrads { da, db, dx })
    }

    fn add_delta(&mut self, sign: f32, par: Par) -> Result<MergeReport> {
        let delta = self.adapter.delta(par)?;
        if let Base::Sparse(c) = &self.base {
            // merging into a sparse base: continue dense, remember the pattern for unmerge
            let dense = c.to_dense();
            self.pattern = Some(c.clone());
            self.base = Base::Dense(dense);
        }
        let Base::Dense(w) = &mut self.base else {
            unreachable!("made dense above")
        };
        let mut max_abs = 0.0f32;
        let mut fro = 0.0f64;
        for (x, d) in w.iter_mut().zip(&delta) {
            let before = *x;
            *x += sign * d;
            let c = *x - before;
            max_abs = max_abs.max(c.abs());
            fro += (c as f64) * (c as f64);
        }
        Ok(MergeReport {
            max_abs_change: max_abs,
            fro_change: fro.sqrt(),
            off_pattern_max: 0.0,
        })
    }

    /// Folds scale * B A into the base; errors if already merged.
    pub fn merge(&mut self, par: Par) -> Result<MergeReport> {
        if self.merged {
            return Err(Error::invalid("LoraLinear::merge", "already merged"));
        }
        let rep = self.add_delta(1.0, par)?;
        self.merged = true;
        Ok(rep)
    }

    /// Subtracts scale * B A from the base again; errors if not merged. The base comes back equal
    /// to the original up to f32 rounding of the add and the subtract.
    pub fn unmerge(&mut self, par: Par) -> Result<MergeReport> {
        if !self.merged {
            return Err(Error::invalid("LoraLinear::unmerge", "not merged"));
        }
        let mut rep = self.add_delta(-1.0, par)?;
        self.merged = false;
        if let Some(pat) = self.pattern.take() {
            let Base::Dense(w) = &self.base else {
                unreachable!("a merged layer is dense")
            };
            let mask = pat.mask();
            let cols = pat.cols();
            let mut values = Vec::with_capacity(pat.nnz());
            for i in 0..pat.rows() {
                let (ci, _) = pat.row(i);
                values.extend(ci.iter().map(|&j| w[i * cols + j as usize]));
            }
            rep.off_pattern_max = w
                .iter()
                .zip(&mask)
                .filter(|(_, m)| !**m)
                .fold(0.0f32, |a, (x, _)| a.max(x.abs()));
            self.base = Base::Sparse(pat.with_values(values)?);
        }
        Ok(rep)
    }
}

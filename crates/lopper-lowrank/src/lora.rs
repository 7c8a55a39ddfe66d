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
use lopper_sparse::Csr;
use lopper_tensor::io::safetensors::{self as st, SafetensorsFile};
use lopper_tensor::{MatMut, MatRef, Par, Tensor, Transpose, gemm};
use rand::{Rng, SeedableRng};
use std::path::Path;

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

/// Writes adapters to a safetensors file (atomically) in PEFT's naming.
pub fn save_adapters(path: &Path, adapters: &[(&str, &LoraAdapter)]) -> Result<()> {
    let mut f = SafetensorsFile::default();
    for (prefix, a) in adapters {
        f.push(
            format!("{prefix}.lora_A.weight"),
            Tensor::from_f32(&[a.rank, a.cols], a.a.clone())?,
        );
        f.push(
            format!("{prefix}.lora_B.weight"),
            Tensor::from_f32(&[a.rows, a.rank], a.b.clone())?,
        );
        f.metadata
            .insert(format!("{prefix}.lora_alpha"), a.alpha.to_string());
    }
    f.metadata.insert("format".into(), "pt".into());
    st::write(path, &f)?;
    Ok(())
}

/// Reads adapters saved by [`save_adapters`] or PEFT (`adapter_model.safetensors`), in file order of
/// their A tensors. alpha comes from the metadata, else from `default_alpha` (PEFT keeps it in
/// adapter_config.json); a missing B, a shape mismatch or no alpha at all is an error.
pub fn load_adapters(
    path: &Path,
    default_alpha: Option<f32>,
) -> Result<Vec<(String, LoraAdapter)>> {
    let f = st::read(path)?;
    let fmt = |detail: String| Error::Format {
        path: path.display().to_string(),
        detail,
    };
    let mut out = Vec::new();
    for (name, a) in f.tensors() {
        let Some(prefix) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let bname = format!("{prefix}.lora_B.weight");
        let b = f
            .tensor(&bname)
            .ok_or_else(|| fmt(format!("{name} has no matching {bname}")))?;
        let alpha = match f.metadata.get(&format!("{prefix}.lora_alpha")) {
            Some(s) => s
                .parse::<f32>()
                .map_err(|e| fmt(format!("{prefix}.lora_alpha = {s:?}: {e}")))?,
            None => default_alpha.ok_or_else(|| {
                fmt(format!(
                    "no {prefix}.lora_alpha in the metadata and no default alpha given"
                ))
            })?,
        };
        let ad = LoraAdapter::from_parts(a, b, alpha).map_err(|e| fmt(format!("{prefix}: {e}")))?;
        out.push((prefix.to_string(), ad));
    }
    if out.is_empty() {
        return Err(fmt("no `<prefix>.lora_A.weight` tensors".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    fn layer(m: usize, k: usize, r: usize, seed: u64) -> LoraLinear {
        let w = Tensor::from_f32(&[m, k], randn(m * k, seed)).unwrap();
        let mut l = LoraLinear::new(&w, r, 2.0 * r as f32, seed + 1).unwrap();
        // B is zero at init; give it values so the update is not trivially zero
        l.adapter_mut().unwrap().b = randn(m * r, seed + 2);
        l
    }

    #[test]
    fn starts_equal_to_base() {
        let w = Tensor::from_f32(&[5, 7], randn(35, 1)).unwrap();
        let l = LoraLinear::new(&w, 3, 6.0, 2).unwrap();
        assert!(l.adapter().b.iter().all(|&x| x == 0.0));
        let bound = 1.0 / 7f32.sqrt();
        assert!(
            l.adapter().a.iter().all(|&x| x.abs() <= bound)
                && l.adapter().a.iter().any(|&x| x != 0.0)
        );
        let x = randn(4 * 7, 3);
        let y = l.forward(MatRef::new(&x, 4, 7).unwrap(), Par::Seq).unwrap();
        let wt: Vec<f32> = (0..7)
            .flat_map(|j| {
                (0..5)
                    .map(|i| w.as_f32().unwrap()[i * 7 + j])
                    .collect::<Vec<_>>()
            })
            .collect();
        let want = matmul_ref(&x, &wt, 4, 7, 5);
        assert!(
            y.iter()
                .zip(&want)
                .all(|(&a, &b)| (a as f64 - b).abs() < 1e-4)
        );
        assert!(LoraLinear::new(&w, 0, 1.0, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn merge_unmerge_round_trip(m in 1usize..24, k in 1usize..24, r in 1usize..6, t in 1usize..6, seed in 0u64..500) {
            let mut l = layer(m, k, r, seed);
            let Base::Dense(w0) = l.base().clone() else { unreachable!() };
            let x = randn(t * k, seed + 9);
            let xm = MatRef::new(&x, t, k).unwrap();
            let y0 = l.forward(xm, Par::Seq).unwrap();
            let delta = l.adapter().delta(Par::Seq).unwrap();
            let dmax = delta.iter().fold(0.0f32, |a, &d| a.max(d.abs()));
            let rep = l.merge(Par::Seq).unwrap();
            prop_assert!(l.merge(Par::Seq).is_err());
            // the change reported is the update, up to rounding
            prop_assert!((rep.max_abs_change - dmax).abs() <= 1e-5 * (1.0 + dmax) * 4.0);
            let y1 = l.forward(xm, Par::Seq).unwrap();
            for (a, b) in y0.iter().zip(&y1) {
                prop_assert!((a - b).abs() <= 1e-4 * (k as f32 + 1.0) * (1.0 + b.abs()));
            }
            let rep2 = l.unmerge(Par::Seq).unwrap();
            prop_assert!((rep2.fro_change - rep.fro_change).abs() <= 1e-5 * (1.0 + rep.fro_change) * 4.0);
            let Base::Dense(w1) = l.base() else { unreachable!() };
            // exact up to the rounding of one add and one subtract: |w1 - w0| <= 2 ulp(|w0| + |delta|)
            for ((a, b), d) in w1.iter().zip(&w0).zip(&delta) {
                let ulp = f32::EPSILON * (b.abs() + d.abs());
                prop_assert!((a - b).abs() <= 2.0 * ulp, "{a} vs {b}");
            }
        }

        #[test]
        fn backward_matches_finite_differences_of_a_linear_loss(m in 1usize..8, k in 1usize..8, r in 1usize..4,
                                                                t in 1usize..4, seed in 0u64..500) {
            // loss = sum(Y * dY) is linear in A for fixed B (and in B for fixed A): the gradient is
            // exactly the difference quotient up to rounding.
            let l = layer(m, k, r, seed);
            let x = randn(t * k, seed + 3);
            let dy = randn(t * m, seed + 4);
            let xm = MatRef::new(&x, t, k).unwrap();
            let loss = |l: &LoraLinear| -> f64 {
                l.forward(xm, Par::Seq).unwrap().iter().zip(&dy).map(|(&a, &b)| a as f64 * b as f64).sum()
            };
            let g = l.backward(xm, MatRef::new(&dy, t, m).unwrap(), Par::Seq).unwrap();
            let base = loss(&l);
            let h = 1e-2f32;
            for i in 0..r * k {
                let mut l2 = l.clone();
                l2.adapter_mut().unwrap().a[i] += h;
                let fd = (loss(&l2) - base) / h as f64;
                prop_assert!((fd - g.da[i] as f64).abs() <= 2e-2 * (1.0 + fd.abs()), "dA[{i}] {fd} vs {}", g.da[i]);
            }
            for i in 0..m * r {
                let mut l2 = l.clone();
                l2.adapter_mut().unwrap().b[i] += h;
                let fd = (loss(&l2) - base) / h as f64;
                prop_assert!((fd - g.db[i] as f64).abs() <= 2e-2 * (1.0 + fd.abs()), "dB[{i}] {fd} vs {}", g.db[i]);
            }
        }
    }

    #[test]
    fn sparse_base_matches_dense_and_round_trips() {
        let (m, k, r, t) = (9, 7, 2, 3);
        let w = randn(m * k, 5);
        let csr = Csr::from_topk(MatRef::new(&w, m, k).unwrap(), 20).unwrap();
        let mut dense = layer(m, k, r, 5);
        dense.base = Base::Dense(csr.to_dense());
        let mut sparse =
            LoraLinear::with_adapter(Base::Sparse(csr.clone()), dense.adapter().clone()).unwrap();
        let x = randn(t * k, 6);
        let dy = randn(t * m, 7);
        let (xm, dym) = (
            MatRef::new(&x, t, k).unwrap(),
            MatRef::new(&dy, t, m).unwrap(),
        );
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        };
        assert!(close(
            &sparse.forward(xm, Par::Seq).unwrap(),
            &dense.forward(xm, Par::Seq).unwrap()
        ));
        let (gs, gd) = (
            sparse.backward(xm, dym, Par::Seq).unwrap(),
            dense.backward(xm, dym, Par::Seq).unwrap(),
        );
        assert!(close(&gs.dx, &gd.dx) && close(&gs.da, &gd.da) && close(&gs.db, &gd.db));
        let y0 = sparse.forward(xm, Par::Seq).unwrap();
        sparse.merge(Par::Seq).unwrap();
        assert!(matches!(sparse.base(), Base::Dense(_)));
        assert!(close(&sparse.forward(xm, Par::Seq).unwrap(), &y0));
        let rep = sparse.unmerge(Par::Seq).unwrap();
        // (0 + d) - d is exactly 0 in IEEE arithmetic: nothing left off the pattern
        assert_eq!(rep.off_pattern_max, 0.0);
        let Base::Sparse(back) = sparse.base() else {
            panic!("unmerge restores the CSR")
        };
        assert_eq!(
            (back.row_ptr(), back.col_idx()),
            (csr.row_ptr(), csr.col_idx())
        );
        for (a, b) in back.values().iter().zip(csr.values()) {
            assert!(
                (a - b).abs() <= 4.0 * f32::EPSILON * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
        assert!(
            LoraLinear::with_adapter(
                Base::Sparse(csr),
                LoraAdapter::new(3, 3, 1, 1.0, 0).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn save_load_peft_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adapter_model.safetensors");
        let l1 = layer(6, 4, 2, 1);
        let l2 = layer(3, 5, 3, 2);
        save_adapters(
            &p,
            &[
                ("model.q_proj", l1.adapter()),
                ("model.v_proj", l2.adapter()),
            ],
        )
        .unwrap();
        let f = st::read(&p).unwrap();
        let names: Vec<&str> = f.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.q_proj.lora_A.weight",
                "model.q_proj.lora_B.weight",
                "model.v_proj.lora_A.weight",
                "model.v_proj.lora_B.weight"
            ]
        );
        assert_eq!(
            f.tensor("model.q_proj.lora_A.weight").unwrap().shape(),
            &[2, 4]
        );
        assert_eq!(
            f.tensor("model.q_proj.lora_B.weight").unwrap().shape(),
            &[6, 2]
        );
        let back = load_adapters(&p, None).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&back[0].1, l1.adapter());
        assert_eq!(&back[1].1, l2.adapter());
        assert_eq!(back[1].0, "model.v_proj");

        // a PEFT-style file: no alpha in the metadata, and one B missing
        let mut g = SafetensorsFile::default();
        g.push(
            "x.lora_A.weight",
            Tensor::zeros(&[2, 4], lopper_tensor::DType::F32),
        );
        st::write(&p, &g).unwrap();
        let e = load_adapters(&p, Some(16.0)).unwrap_err();
        assert!(e.to_string().contains("x.lora_B.weight"), "{e}");
        g.push(
            "x.lora_B.weight",
            Tensor::zeros(&[3, 2], lopper_tensor::DType::BF16),
        );
        st::write(&p, &g).unwrap();
        assert!(load_adapters(&p, None).is_err());
        let ok = load_adapters(&p, Some(16.0)).unwrap();
        assert_eq!(
            (ok[0].1.rank, ok[0].1.alpha, ok[0].1.scale()),
            (2, 16.0, 8.0)
        );
        g.push(
            "y.lora_A.weight",
            Tensor::zeros(&[2, 4], lopper_tensor::DType::F32),
        );
        g.push(
            "y.lora_B.weight",
            Tensor::zeros(&[3, 5], lopper_tensor::DType::F32),
        );
        st::write(&p, &g).unwrap();
        assert!(load_adapters(&p, Some(1.0)).is_err());
    }
}

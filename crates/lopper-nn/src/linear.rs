//! Linear: `y (N, M) = x (N, K) W^T + b`, W (M, K) of any [`Weight`] kind.
//!
//! Sparse kinds keep activations row-major and work on transposes: `Y^T (M, N) = W X^T` by spmm,
//! `dX^T (K, N) = W^T dY^T` by spmm with the cached transpose, `dW = dY^T X` at the pattern by sddmm
//! with A = dY^T (M, N) and B = X^T (K, N). The transposes go through reused scratch buffers
//! (O(N*K) moves against O(nnz*N) multiply-adds).
use crate::error::{check_len, shape};
use crate::flops::{Flops, StepFlops};
use crate::kernels::{GemmThreads, add_row_sums_par, gemm_nx, gemm_nx_bias, transpose};
use crate::panels::{self, Fwd};
use crate::precision::{Precision, round_copy, round_in_place, round_into, widen_into};
use crate::util::{ensure, randn};
use crate::weight::LoraBase;
use crate::{ParamMut, Result, Weight, WeightKind};
use lopper_sparse::kernels::spmm_t_with;
use lopper_sparse::spmm;
use lopper_tensor::bf16;
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};

mod feature_major;
mod panel;
pub(crate) use panel::PanelGrads;

const N: Transpose = Transpose::No;
const T: Transpose = Transpose::Yes;

/// Scratch buffers reused across steps (grown on first use).
#[derive(Clone, Debug, Default)]
struct Scratch {
    xt: Vec<f32>,
    yt: Vec<f32>,
    h: Vec<f32>,
    dh: Vec<f32>,
    /// Per-thread panel buffers of the sparse kinds.
    parts: Vec<crate::panels::PartBufs>,
    /// dW^T (K, M) and its transpose, when dW goes through x^T (see [`dense_dw`]).
    dwt: Vec<f32>,
    dwt2: Vec<f32>,
}

/// `g (M, K) += dy^T x` on explicit transposes (faer's product with a transposed left operand ran
/// at about half the rate): through dy^T (M, N) already in `s.yt` (`via_x` false), or through
/// x^T (K, N) in `s.xt`: `dW^T (K, M) = x^T dy`, then `g += (dW^T)^T` (`via_x` true, chosen when
/// K (N + M) < N M elements move, e.g. 256 -> 1024 with N = 1024).
#[allow(clippy::too_many_arguments)]
fn dense_dw(
    s: &mut Scratch,
    g: &mut [f32],
    x: &[f32],
    dy: &[f32],
    (n, m, k): (usize, usize, usize),
    via_x: bool,
    par: Par,
    how: GemmThreads,
) -> Result<()> {
    if via_x {
        ensure(&mut s.dwt, k * m);
        ensure(&mut s.dwt2, m * k);
        gemm_nx(
            &mut s.dwt,
            &s.xt,
            MatRef::new(dy, n, m)?,
            N,
            k,
            n,
            1.0,
            0.0,
            par,
            how,
        )?; // (K, M)
        transpose(&s.dwt, k, m, &mut s.dwt2, par);
        crate::util::add_into_par(g, &s.dwt2, par);
    } else {
        gemm_nx(g, &s.yt, MatRef::new(x, n, k)?, N, m, n, 1.0, 1.0, par, how)?; // (M, K)
    }
    Ok(())
}

/// A fully connected layer whose weight can be any [`Weight`] kind.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Dotted name, e.g. `h.0.attn.qkv`.
    pub name: String,
    in_features: usize,
    out_features: usize,
    weight: Weight,
    bias: Option<(Vec<f32>, Vec<f32>)>,
    par: Par,
    threads: GemmThreads,
    s: Scratch,
    /// While `Some`: the full dense dL/dW (M, K), accumulated by every backward (see
    /// [`Linear::request_dense_grad`]).
    dense_grad: Option<Vec<f32>>,
    /// Row-major copies for the feature-major path of kinds without a native one.
    fm: (Vec<f32>, Vec<f32>),
    precision: Precision,
    mp: Mixed,
}

/// Buffers of the bf16 mode (see [`Precision`]).
#[derive(Clone, Debug, Default)]
struct Mixed {
    /// The bf16 copy of a Dense/Masked weight, rounded from the f32 master at each forward.
    wb: Vec<bf16>,
    /// Its f32 widening (the GEMM operand; swapped with the master while a product runs).
    w32: Vec<f32>,
    /// The f32 master values of a Csr/2:4 weight while its rounded values are in place.
    master: Vec<f32>,
    /// The input saved by the last forward, bf16.
    xb: Vec<bf16>,
    /// Widened input and rounded output gradient (f32 operands of the products).
    x32: Vec<f32>,
    dy32: Vec<f32>,
}

impl Linear {
    /// Dense weight N(0, std^2) (deterministic in `seed`), zero bias when `bias`.
    pub fn new(
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        std: f32,
        seed: u64,
    ) -> Linear {
        let w = randn(in_features * out_features, std, seed);
        Linear {
            name: name.to_string(),
            in_features,
            out_features,
            weight: Weight::dense(w),
            bias: bias.then(|| (vec![0.0; out_features], vec![0.0; out_features])),
            par: Par::rayon(),
            threads: GemmThreads::default(),
            s: Scratch::default(),
            dense_grad: None,
            fm: (Vec::new(), Vec::new()),
            precision: Precision::F32,
            mp: Mixed::default(),
        }
    }

    /// From a dense weight (out, in) row-major and an optional bias (out).
    pub fn from_dense(
        name: &str,
        in_features: usize,
        out_features: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Linear> {
        let want = in_features.checked_mul(out_features).ok_or_else(|| {
            shape(
                name,
                format!("a {out_features}x{in_features} weight overflows usize"),
            )
        })?;
        check_len(name, "weight", w.len(), want)?;
        if let Some(b) = &bias {
            check_len(name, "bias", b.len(), out_features)?;
        }
        let mut l = Linear::new(name, in_features, out_features, false, 0.0, 0);
        l.weight = Weight::dense(w);
        l.bias = bias.map(|b| {
            let n = b.len();
            (b, vec![0.0; n])
        });
        Ok(l)
    }

    /// Input width K.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Output width M.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// The weight.
    pub fn weight(&self) -> &Weight {
        &self.weight
    }
    /// The weight, mutable (e.g. to edit a Csr's values; the pattern stays).
    pub fn weight_mut(&mut self) -> &mut Weight {
        &mut self.weight
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_ref().map(|b| b.0.as_slice())
    }
    /// Sets the parallelism of this layer's products (default: the rayon pool).
    pub fn set_par(&mut self, par: Par) {
        self.par = par;
    }
    /// Sets the storage precision (default f32). With [`Precision::Bf16`]: the weight is rounded to
    /// a bf16 copy at each forward (Dense, Masked, Csr and 2:4; LowRank and LoRA factors stay f32),
    /// the forward saves its input as bf16, outputs and input gradients are rounded to bf16 values,
    /// products accumulate in f32 and gradients go to the f32 master weight. **The backward then
    /// reads the saved bf16 input, not its `x` argument** (only `x`'s length is checked), so a model
    /// need not keep an f32 copy of the input. Forgets any saved input.
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
        self.mp = Mixed::default();
    }
    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// Bytes of the activations this layer keeps between forward and backward (the bf16 input copy
    /// in bf16 mode; 0 in f32 mode, where the model keeps the input).
    pub fn saved_bytes(&self) -> usize {
        self.mp.xb.len() * 2
    }

    /// Puts the bf16-rounded weight values in place of the master values (kept in `mp`).
    fn round_weight_in(&mut self, mp: &mut Mixed) {
        match &mut self.weight {
            Weight::Dense { w, .. } | Weight::Masked { w, .. } => {
                round_into(w, &mut mp.wb);
                ensure(&mut mp.w32, w.len());
                widen_into(&mp.wb, &mut mp.w32);
                std::mem::swap(w, &mut mp.w32);
            }
            Weight::Csr { w, .. } => {
                mp.master.clear();
                mp.master.extend_from_slice(w.values());
                round_in_place(w.values_mut());
            }
            Weight::Sparse24 { w, .. } => {
                mp.master.clear();
                mp.master.extend_from_slice(w.values());
                round_in_place(w.values_mut());
            }
            Weight::LowRank { .. } | Weight::Lora { .. } => {}
        }
    }

    /// Undoes [`Linear::round_weight_in`].
    fn restore_weight(&mut self, mp: &mut Mixed) {
        match &mut self.weight {
            Weight::Dense { w, .. } | Weight::Masked { w, .. } => std::mem::swap(w, &mut mp.w32),
            Weight::Csr { w, .. } => w.values_mut().copy_from_slice(&mp.master),
            Weight::Sparse24 { w, .. } => w.values_mut().copy_from_slice(&mp.master),
            Weight::LowRank { .. } | Weight::Lora { .. } => {}
        }
    }

    fn forward_bf16(&mut self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        self.check("input", x.len(), n, self.in_features)?;
        let mut mp = std::mem::take(&mut self.mp);
        round_into(x, &mut mp.xb); // saved for the backward
        ensure(&mut mp.x32, x.len());
        widen_into(&mp.xb, &mut mp.x32);
        self.round_weight_in(&mut mp);
        let r = self.forward_f32(&mp.x32, n, y);
        self.restore_weight(&mut mp);
        self.mp = mp;
        r?;
        round_in_place(y);
        Ok(())
    }

    fn backward_bf16(&mut self, x: &[f32], dy: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        self.check("input", x.len(), n, self.in_features)?;
        self.check("output gradient", dy.len(), n, self.out_features)?;
        let mut mp = std::mem::take(&mut self.mp);
        if mp.xb.len() != x.len() {
            round_into(x, &mut mp.xb); // no saved input of this shape: round the one given
        }
        ensure(&mut mp.x32, x.len());
        widen_into(&mp.xb, &mut mp.x32);
        ensure(&mut mp.dy32, dy.len());
        round_copy(dy, &mut mp.dy32);
        self.round_weight_in(&mut mp);
        let r = self.backward_f32(&mp.x32, &mp.dy32, n, dx);
        self.restore_weight(&mut mp);
        self.mp = mp;
        r?;
        round_in_place(dx);
        Ok(())
    }

    /// How dense products use several threads (default [`GemmThreads::Slabs`]).
    pub fn set_gemm_threads(&mut self, how: GemmThreads) {
        self.threads = how;
    }
    /// The weight's dense equivalent (out, in).
    pub fn dense_weight(&self) -> Vec<f32> {
        self.weight.to_dense(self.out_features, self.in_features)
    }
    /// Changes the weight's kind (see [`WeightKind`] for which conversions keep the function).
    /// Gradients restart at zero.
    pub fn set_kind(&mut self, kind: &WeightKind) -> Result<()> {
        self.weight = self
            .weight
            .convert(kind, self.out_features, self.in_features, &self.name)?;
        Ok(())
    }
    /// Replaces the weight (shape checked through its dense equivalent's length).
    pub fn set_weight(&mut self, w: Weight) -> Result<()> {
        let (m, k) = (self.out_features, self.in_features);
        let ok = match &w {
            Weight::Dense { w, .. } | Weight::Masked { w, .. } => w.len() == m * k,
            Weight::Csr { w, .. } => w.rows() == m && w.cols() == k,
            Weight::Sparse24 { w, .. } => w.rows() == m && w.cols() == k,
            Weight::LowRank { rank, u, v, .. } => u.len() == m * rank && v.len() == rank * k,
            Weight::Lora { rank, a, b, .. } => a.len() == rank * k && b.len() == m * rank,
        };
        if !ok {
            return Err(shape(
                &self.name,
                format!("new {} weight does not fit {m}x{k}", w.kind_name()),
            ));
        }
        self.weight = w;
        Ok(())
    }
    /// Asks every following backward to also accumulate the full dense weight gradient
    /// `dy^T x` (M, K), whatever the weight's kind (one dense GEMM per backward, so only for the
    /// steps that need it: RigL's growth criterion, movement or Taylor scores of a sparse layer).
    /// `false` drops the buffer.
    pub fn request_dense_grad(&mut self, on: bool) {
        let len = self.out_features * self.in_features;
        match (on, &self.dense_grad) {
            (true, None) => self.dense_grad = Some(vec![0.0; len]),
            (false, _) => self.dense_grad = None,
            _ => {}
        }
    }
    /// The dense weight gradient (M, K) accumulated since the last `zero_grad`, while requested.
    pub fn dense_grad(&self) -> Option<&[f32]> {
        self.dense_grad.as_deref()
    }
    /// Zeroes weight and bias gradients (and the dense gradient, when requested).
    pub fn zero_grad(&mut self) {
        if let Some(g) = &mut self.dense_grad {
            crate::util::zero_par(g, self.par);
        }
        self.weight.zero_grad_par(self.par);
        if let Some((_, db)) = &mut self.bias {
            db.fill(0.0);
        }
    }
    /// Trainable parameters: the weight's (see [`Weight::params`]) and `{name}.bias`.
    pub fn params<'a>(&'a mut self, out: &mut Vec<ParamMut<'a>>) {
        self.weight.params(&self.name, out);
        if let Some((b, db)) = &mut self.bias {
            out.push(ParamMut {
                name: format!("{}.bias", self.name),
                values: b,
                grad: db,
                mask: None,
            });
        }
    }

    /// FLOPs of a forward and backward over `n` rows: executed by this kind vs the dense layer.
    pub fn flops(&self, n: usize) -> StepFlops {
        let (m, k, n) = (self.out_features as u64, self.in_features as u64, n as u64);
        let dense = 2 * n * m * k;
        let b = if self.bias.is_some() { n * m } else { 0 };
        let (fwd, bwd) = match &self.weight {
            Weight::Dense { .. } | Weight::Masked { .. } => (dense, 2 * dense),
            Weight::Csr { w, .. } => (2 * n * w.nnz() as u64, 4 * n * w.nnz() as u64),
            Weight::Sparse24 { w, .. } => (
                2 * n * w.values().len() as u64,
                4 * n * w.values().len() as u64,
            ),
            Weight::LowRank { rank, .. } => {
                let f = 2 * n * *rank as u64 * (m + k);
                (f, 2 * f)
            }
            Weight::Lora { base, rank, .. } => {
                let bf = match base {
                    LoraBase::Dense(_) => dense,
                    LoraBase::Csr(c, _) => 2 * n * c.nnz() as u64,
                };
                let f = 2 * n * *rank as u64 * (m + k);
                (bf + f, bf + 2 * f)
            }
        };
        // a requested dense weight gradient is one more dense GEMM in the backward, whatever the
        // kind (executed only: the dense-equivalent step computes dW once anyway)
        let g = if self.dense_grad.is_some() { dense } else { 0 };
        StepFlops {
            forward: Flops::new(fwd + b, dense + b),
            backward: Flops::new(bwd + g + b, 2 * dense + b),
        }
    }

    fn check(&self, what: &str, len: usize, n: usize, width: usize) -> Result<()> {
        if n.checked_mul(width) != Some(len) {
            return Err(shape(
                &self.name,
                format!("{what} has {len} elements, expected {n} rows x {width}"),
            ));
        }
        Ok(())
    }

    /// `y (n, out) = x (n, in) W^T + b`.
    pub fn forward(&mut self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        match self.precision {
            Precision::F32 => self.forward_f32(x, n, y),
            Precision::Bf16 => self.forward_bf16(x, n, y),
        }
    }

    fn forward_f32(&mut self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (m, k, par) = (self.out_features, self.in_features, self.par);
        self.check("input", x.len(), n, k)?;
        self.check("output", y.len(), n, m)?;
        let xm = MatRef::new(x, n, k)?;
        let how = self.threads;
        let s = &mut self.s;
        // Dense kinds start y at the bias (per row slab, on its thread) and accumulate the product.
        let dense = matches!(self.weight, Weight::Dense { .. } | Weight::Masked { .. });
        let bias = self.bias.as_ref().map(|b| b.0.as_slice());
        if let Weight::Masked { w, mask, .. } = &mut self.weight {
            lopper_tensor::ops::apply_mask(w, mask)?;
        }
        match &mut self.weight {
            Weight::Dense { w, .. } | Weight::Masked { w, .. } => {
                let wm = MatRef::new(w, m, k)?;
                match bias {
                    Some(b) => gemm_nx_bias(y, x, wm, T, n, k, b, par, how)?, // y = x W^T + b
                    None => gemm_nx(y, x, wm, T, n, k, 1.0, 0.0, par, how)?,  // y = x W^T
                }
            }
            Weight::Csr { w, .. } => {
                panels::forward(Fwd::Csr(w), x, n, m, k, y, &mut s.parts, par)?; // y^T = W x^T
            }
            Weight::Sparse24 { w, .. } => {
                panels::forward(Fwd::S24(w), x, n, m, k, y, &mut s.parts, par)?;
            }
            Weight::LowRank { rank, u, v, .. } => {
                let r = *rank;
                ensure(&mut s.h, n * r);
                gemm(
                    MatMut::new(&mut s.h, n, r)?,
                    xm,
                    N,
                    MatRef::new(v, r, k)?,
                    T,
                    1.0,
                    0.0,
                    par,
                )?; // h (N, r) = x V^T
                gemm(
                    MatMut::new(y, n, m)?,
                    MatRef::new(&s.h, n, r)?,
                    N,
                    MatRef::new(u, m, r)?,
                    T,
                    1.0,
                    0.0,
                    par,
                )?; // y = h U^T
            }
            Weight::Lora {
                base,
                rank,
                alpha,
                a,
                b,
                ..
            } => {
                let r = *rank;
                match base {
                    LoraBase::Dense(w) => gemm(
                        MatMut::new(y, n, m)?,
                        xm,
                        N,
                        MatRef::new(w, m, k)?,
                        T,
                        1.0,
                        0.0,
                        par,
                    )?,
                    LoraBase::Csr(c, _) => {
                        ensure(&mut s.xt, k * n);
                        ensure(&mut s.yt, m * n);
                        transpose(x, n, k, &mut s.xt, par);
                        spmm(
                            c,
                            MatRef::new(&s.xt, k, n)?,
                            MatMut::new(&mut s.yt, m, n)?,
                            par,
                        )?;
                        transpose(&s.yt, m, n, y, par);
                    }
                }
                ensure(&mut s.h, n * r);
                gemm(
                    MatMut::new(&mut s.h, n, r)?,
                    xm,
                    N,
                    MatRef::new(a, r, k)?,
                    T,
                    1.0,
                    0.0,
                    par,
                )?; // h (N, r) = x A^T
                let sc = *alpha / r as f32;
                gemm(
                    MatMut::new(y, n, m)?,
                    MatRef::new(&s.h, n, r)?,
                    N,
                    MatRef::new(b, m, r)?,
                    T,
                    sc,
                    1.0,
                    par,
                )?; // y += sc h B^T
            }
        }
        if let (Some((b, _)), false) = (&self.bias, dense) {
            for row in y.chunks_exact_mut(m) {
                crate::util::add_into(row, b);
            }
        }
        Ok(())
    }

    /// Given the forward's input `x (n, in)` and `dy (n, out)`: parameter gradients `+=`,
    /// `dx (n, in) =` the input gradient. (In bf16 mode the saved input replaces `x`: see
    /// [`Linear::set_precision`].)
    pub fn backward(&mut self, x: &[f32], dy: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        match self.precision {
            Precision::F32 => self.backward_f32(x, dy, n, dx),
            Precision::Bf16 => self.backward_bf16(x, dy, n, dx),
        }
    }

    fn backward_f32(&mut self, x: &[f32], dy: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        let (m, k, par) = (self.out_features, self.in_features, self.par);
        self.check("input", x.len(), n, k)?;
        self.check("output gradient", dy.len(), n, m)?;
        self.check("input gradient", dx.len(), n, k)?;
        let (xm, dym) = (MatRef::new(x, n, k)?, MatRef::new(dy, n, m)?);
        let how = self.threads;
        let s = &mut self.s;
        // a dense dW goes through an explicit transpose of dy or of x (see dense_dw); a LoRA with
        // a Csr base reads dy^T
        let dense_kind = self.dense_grad.is_some()
            || matches!(self.weight, Weight::Dense { .. } | Weight::Masked { .. });
        let via_x = dense_kind && k * (n + m) < n * m;
        let need_t = (dense_kind && !via_x)
            || matches!(
                self.weight,
                Weight::Lora {
                    base: LoraBase::Csr(..),
                    ..
                }
            );
        if need_t {
            ensure(&mut s.yt, m * n);
            transpose(dy, n, m, &mut s.yt, par);
        }
        if via_x {
            ensure(&mut s.xt, k * n);
            transpose(x, n, k, &mut s.xt, par);
        }
        let dims = (n, m, k);
        if let Some((_, db)) = &mut self.bias {
            if need_t {
                add_row_sums_par(&s.yt, n, db, par); // db (M) += row sums of dy^T
            } else {
                crate::util::add_col_sums_par(dy, db, par); // db (M) += sum over rows of dy
            }
        }
        if let Some(g) = &mut self.dense_grad {
            dense_dw(s, g, x, dy, dims, via_x, par, how)?; // G (M, K) += dy^T x
        }
        match &mut self.weight {
            Weight::Dense { w, dw } => {
                dense_dw(s, dw, x, dy, dims, via_x, par, how)?; // dW (M, K) += dy^T x
                gemm_nx(dx, dy, MatRef::new(w, m, k)?, N, n, m, 1.0, 0.0, par, how)?; // dx = dy W
            }
            Weight::Masked { w, dw, mask } => {
                dense_dw(s, dw, x, dy, dims, via_x, par, how)?;
                lopper_tensor::ops::apply_mask(dw, mask)?;
                gemm_nx(dx, dy, MatRef::new(w, m, k)?, N, n, m, 1.0, 0.0, par, how)?;
            }
            Weight::Csr { w, wt, dw } => {
                wt.refresh_par(w, par)?; // values changed since the last step; O(nnz)
                panels::backward(wt, dw, x, dy, n, m, k, dx, &mut s.parts, par)?;
            }
            Weight::Sparse24 { w, mirror, wt, dw } => {
                mirror.values_mut().copy_from_slice(w.values());
                wt.refresh_par(mirror, par)?;
                panels::backward(wt, dw, x, dy, n, m, k, dx, &mut s.parts, par)?;
            }
            Weight::LowRank { rank, u, v, du, dv } => {
                let r = *rank;
                ensure(&mut s.h, n * r);
                ensure(&mut s.dh, n * r);
                gemm(
                    MatMut::new(&mut s.h, n, r)?,
                    xm,
                    N,
                    MatRef::new(v, r, k)?,
                    T,
                    1.0,
                    0.0,
                    par,
                )?; // h = x V^T
                gemm(
                    MatMut::new(du, m, r)?,
                    dym,
                    T,
                    MatRef::new(&s.h, n, r)?,
                    N,
                    1.0,
                    1.0,
                    par,
                )?; // dU += dy^T h
                gemm(
                    MatMut::new(&mut s.dh, n, r)?,
                    dym,
                    N,
                    MatRef::new(u, m, r)?,
                    N,
                    1.0,
                    0.0,
                    par,
                )?; // dh = dy U
                let dhm = MatRef::new(&s.dh, n, r)?;
                gemm(MatMut::new(dv, r, k)?, dhm, T, xm, N, 1.0, 1.0, par)?; // dV += dh^T x
                gemm(
                    MatMut::new(dx, n, k)?,
                    dhm,
                    N,
                    MatRef::new(v, r, k)?,
                    N,
                    1.0,
                    0.0,
                    par,
                )?; // dx = dh V
            }
            Weight::Lora {
                base,
                rank,
                alpha,
                a,
                b,
                da,
                db,
            } => {
                let r = *rank;
                let sc = *alpha / r as f32;
                match base {
                    LoraBase::Dense(w) => gemm(
                        MatMut::new(dx, n, k)?,
                        dym,
                        N,
                        MatRef::new(w, m, k)?,
                        N,
                        1.0,
                        0.0,
                        par,
                    )?,
                    LoraBase::Csr(_, t) => {
                        ensure(&mut s.xt, k * n); // s.yt holds dy^T (M, N)
                        spmm_t_with(
                            t,
                            MatRef::new(&s.yt, m, n)?,
                            MatMut::new(&mut s.xt, k, n)?,
                            par,
                        )?; // dx^T (K, N)
                        transpose(&s.xt, k, n, dx, par);
                    }
                }
                ensure(&mut s.h, n * r);
                ensure(&mut s.dh, n * r);
                gemm(
                    MatMut::new(&mut s.h, n, r)?,
                    xm,
                    N,
                    MatRef::new(a, r, k)?,
                    T,
                    1.0,
                    0.0,
                    par,
                )?; // h = x A^T
                gemm(
                    MatMut::new(db, m, r)?,
                    dym,
                    T,
                    MatRef::new(&s.h, n, r)?,
                    N,
                    sc,
                    1.0,
                    par,
                )?; // dB += sc dy^T h
                gemm(
                    MatMut::new(&mut s.dh, n, r)?,
                    dym,
                    N,
                    MatRef::new(b, m, r)?,
                    N,
                    sc,
                    0.0,
                    par,
                )?; // dh = sc dy B
                let dhm = MatRef::new(&s.dh, n, r)?;
                gemm(MatMut::new(da, r, k)?, dhm, T, xm, N, 1.0, 1.0, par)?; // dA += dh^T x
                gemm(
                    MatMut::new(dx, n, k)?,
                    dhm,
                    N,
                    MatRef::new(a, r, k)?,
                    N,
                    1.0,
                    1.0,
                    par,
                )?; // dx += dh A
            }
        }
        Ok(())
    }
}

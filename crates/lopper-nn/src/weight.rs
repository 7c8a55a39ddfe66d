//! The weight of a [`crate::Linear`]: (M, K) = (out_features, in_features), in one of six kinds, each
//! with its gradient storage. Conversions between kinds keep the function the layer computes whenever
//! the target kind can represent the current weight (Dense <-> Masked <-> Csr with the same zeros; a
//! LoRA starts with B = 0; a LowRank of full rank).
use crate::error::invalid;
use crate::{ParamMut, Result};
use lopper_sparse::{Csr, CsrTranspose, Sparse24};
use lopper_tensor::{MatRef, Par};

/// A frozen LoRA base: dense or CSR.
// one per layer, so the size of its larger variant does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum LoraBase {
    /// Dense (M, K).
    Dense(Vec<f32>),
    /// Sparse (M, K) with its cached transpose for the backward.
    Csr(Csr, CsrTranspose),
}

/// A Linear layer's weight W (M, K), `y = x W^T`, with gradient buffers of the same layout.
#[derive(Clone, Debug)]
pub enum Weight {
    /// Dense row-major (M, K).
    Dense {
        /// The weight values.
        w: Vec<f32>,
        /// Its gradient (same layout as the values).
        dw: Vec<f32>,
    },
    /// Dense with a mask (the usual way to "prune"): the mask is applied to W before every forward
    /// and to dW after every backward; compute stays dense.
    Masked {
        /// The weight values.
        w: Vec<f32>,
        /// Its gradient (same layout as the values).
        dw: Vec<f32>,
        /// Entries that may be non-zero (M*K).
        mask: Vec<bool>,
    },
    /// CSR: forward spmm, backward dX by spmm with the cached transpose (refreshed from the values
    /// each backward, O(nnz)), dW by sddmm at the pattern only (`dw` has nnz entries).
    Csr {
        /// The sparse weight.
        w: Csr,
        /// Its cached transpose, for dX.
        wt: CsrTranspose,
        /// Its gradient (same layout as the values).
        dw: Vec<f32>,
    },
    /// 2:4: forward spmm_24. Backward through `mirror`, a CSR with the same pattern and value order
    /// as the 2:4 values (padding zeros included), so dX is spmm_t and dW is sddmm at the 2:4 pattern
    /// (the transposed weight is not 2:4, so no 2:4 kernel applies to dX).
    Sparse24 {
        /// The 2:4 weight.
        w: Sparse24,
        /// A CSR with the same pattern and value order, for the backward.
        mirror: Csr,
        /// Its cached transpose, for dX.
        wt: CsrTranspose,
        /// Its gradient (same layout as the values).
        dw: Vec<f32>,
    },
    /// W = U V with U (M, r), V (r, K).
    LowRank {
        /// The rank r.
        rank: usize,
        /// U (M, r).
        u: Vec<f32>,
        /// V (r, K).
        v: Vec<f32>,
        /// dU.
        du: Vec<f32>,
        /// dV.
        dv: Vec<f32>,
    },
    /// W = base (frozen) + (alpha / r) B A with A (r, K), B (M, r); only A and B train.
    Lora {
        /// The frozen base weight.
        base: LoraBase,
        /// The rank r.
        rank: usize,
        /// Scale numerator: the update is (alpha / r) B A.
        alpha: f32,
        /// A (r, K).
        a: Vec<f32>,
        /// B (M, r).
        b: Vec<f32>,
        /// dA.
        da: Vec<f32>,
        /// dB.
        db: Vec<f32>,
    },
}

/// A request to change a weight's kind ([`crate::Linear::set_kind`]).
#[derive(Clone, Debug, PartialEq)]
pub enum WeightKind {
    /// Dense, from whatever the weight is now (its dense equivalent).
    Dense,
    /// Dense with this mask (row-major, M*K); entries off the mask are zeroed.
    Masked(Vec<bool>),
    /// CSR keeping the current non-zeros (from a Masked weight: keeping its mask, zeros included).
    Csr,
    /// CSR keeping the entries where this mask is true (zeros included).
    CsrMask(Vec<bool>),
    /// 2:4 by magnitude along K (K must be a multiple of 4); changes the function unless the weight
    /// already is 2:4.
    Sparse24,
    /// Truncated SVD to this rank (exact at full rank).
    LowRank {
        /// The rank r.
        rank: usize,
    },
    /// Freezes the current weight as the base (as CSR when `sparse_base`, keeping its non-zeros) and
    /// adds trainable A (random, std 1/sqrt(K)) and B (zero), so the function is unchanged at first.
    Lora {
        /// The adapter rank r.
        rank: usize,
        /// Scale numerator: the update is (alpha / r) B A.
        alpha: f32,
        /// Keep the base as CSR (its non-zeros) instead of dense.
        sparse_base: bool,
        /// Seed of A's initialization.
        seed: u64,
    },
}

impl Weight {
    /// A dense weight (M, K) from values (length M*K checked by the caller).
    pub fn dense(w: Vec<f32>) -> Weight {
        let dw = vec![0.0; w.len()];
        Weight::Dense { w, dw }
    }

    fn csr(w: Csr) -> Weight {
        let wt = w.transpose();
        let dw = vec![0.0; w.nnz()];
        Weight::Csr { w, wt, dw }
    }

    /// Short name of the kind: `dense`, `masked`, `csr`, `sparse24`, `lowrank`, `lora`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Weight::Dense { .. } => "dense",
            Weight::Masked { .. } => "masked",
            Weight::Csr { .. } => "csr",
            Weight::Sparse24 { .. } => "sparse24",
            Weight::LowRank { .. } => "lowrank",
            Weight::Lora { .. } => "lora",
        }
    }

    /// The dense equivalent (M*K, row-major).
    pub fn to_dense(&self, m: usize, k: usize) -> Vec<f32> {
        match self {
            Weight::Dense { w, .. } => w.clone(),
            Weight::Masked { w, mask, .. } => w
                .iter()
                .zip(mask)
                .map(|(x, &b)| if b { *x } else { 0.0 })
                .collect(),
            Weight::Csr { w, .. } => w.to_dense(),
            Weight::Sparse24 { w, .. } => w.to_dense(),
            Weight::LowRank { rank, u, v, .. } => product(u, v, m, *rank, k, 1.0),
            Weight::Lora {
                base,
                rank,
                alpha,
                a,
                b,
                ..
            } => {
                let mut out = match base {
                    LoraBase::Dense(w) => w.clone(),
                    LoraBase::Csr(c, _) => c.to_dense(),
                };
                let d = product(b, a, m, *rank, k, alpha / *rank as f32);
                crate::util::add_into(&mut out, &d);
                out
            }
        }
    }

    /// Stored (executed) weight entries: nnz for sparse kinds, factor sizes for low-rank ones.
    pub fn stored(&self, m: usize, k: usize) -> usize {
        match self {
            Weight::Dense { .. } | Weight::Masked { .. } => m * k,
            Weight::Csr { w, .. } => w.nnz(),
            Weight::Sparse24 { w, .. } => w.values().len(),
            Weight::LowRank { rank, .. } => rank * (m + k),
            Weight::Lora { base, rank, .. } => {
                rank * (m + k)
                    + match base {
                        LoraBase::Dense(_) => m * k,
                        LoraBase::Csr(c, _) => c.nnz(),
                    }
            }
        }
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) {
        self.zero_grad_par(Par::Seq)
    }

    /// [`Weight::zero_grad`] split over `par`'s threads for long gradients.
    pub fn zero_grad_par(&mut self, par: Par) {
        let z = |v: &mut [f32]| crate::util::zero_par(v, par);
        match self {
            Weight::Dense { dw, .. }
            | Weight::Masked { dw, .. }
            | Weight::Csr { dw, .. }
            | Weight::Sparse24 { dw, .. } => z(dw),
            Weight::LowRank { du, dv, .. } => {
                z(du);
                z(dv);
            }
            Weight::Lora { da, db, .. } => {
                z(da);
                z(db);
            }
        }
    }

    /// Trainable parameters (`{prefix}.weight`, or `.u`/`.v`, or `.lora_a`/`.lora_b`).
    pub fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<ParamMut<'a>>) {
        let p = |n: &str| format!("{prefix}.{n}");
        match self {
            Weight::Dense { w, dw } => out.push(ParamMut {
                name: p("weight"),
                values: w,
                grad: dw,
                mask: None,
            }),
            Weight::Masked { w, dw, mask } => out.push(ParamMut {
                name: p("weight"),
                values: w,
                grad: dw,
                mask: Some(mask),
            }),
            Weight::Csr { w, dw, .. } => out.push(ParamMut {
                name: p("weight"),
                values: w.values_mut(),
                grad: dw,
                mask: None,
            }),
            Weight::Sparse24 { w, dw, .. } => out.push(ParamMut {
                name: p("weight"),
                values: w.values_mut(),
                grad: dw,
                mask: None,
            }),
            Weight::LowRank { u, v, du, dv, .. } => {
                out.push(ParamMut {
                    name: p("u"),
                    values: u,
                    grad: du,
                    mask: None,
                });
                out.push(ParamMut {
                    name: p("v"),
                    values: v,
                    grad: dv,
                    mask: None,
                });
            }
            Weight::Lora { a, b, da, db, .. } => {
                out.push(ParamMut {
                    name: p("lora_a"),
                    values: a,
                    grad: da,
                    mask: None,
                });
                out.push(ParamMut {
                    name: p("lora_b"),
                    values: b,
                    grad: db,
                    mask: None,
                });
            }
        }
    }

    /// Converts to `kind` (see [`WeightKind`]); `layer` names the layer in errors.
    pub fn convert(&self, kind: &WeightKind, m: usize, k: usize, layer: &str) -> Result<Weight> {
        let dense = self.to_dense(m, k);
        let mat = MatRef::new(&dense, m, k)?;
        let check_mask = |mask: &[bool]| {
            if mask.len() != m * k {
                return Err(crate::error::shape(
                    layer,
                    format!("mask has {} entries, weight is {m}x{k}", mask.len()),
                ));
            }
            Ok(())
        };
        Ok(match kind {
            WeightKind::Dense => Weight::dense(dense),
            WeightKind::Masked(mask) => {
                check_mask(mask)?;
                let w = dense
                    .iter()
                    .zip(mask)
                    .map(|(x, &b)| if b { *x } else { 0.0 })
                    .collect();
                Weight::Masked {
                    w,
                    dw: vec![0.0; m * k],
                    mask: mask.clone(),
                }
            }
            WeightKind::Csr => match self {
                Weight::Masked { mask, .. } => Weight::csr(Csr::from_mask(mat, mask)?),
                Weight::Csr { w, .. } => Weight::csr(w.clone()),
                _ => Weight::csr(Csr::from_dense(mat, 0.0)?),
            },
            WeightKind::CsrMask(mask) => {
                check_mask(mask)?;
                Weight::csr(Csr::from_mask(mat, mask)?)
            }
            WeightKind::Sparse24 => {
                let w = Sparse24::from_dense_prune(mat)?;
                let mut keep = vec![false; m * k];
                for i in 0..m {
                    for g in 0..k / 4 {
                        let (a, b) = w.indices(i, g);
                        keep[i * k + 4 * g + a] = true;
                        keep[i * k + 4 * g + b] = true;
                    }
                }
                let pruned = w.to_dense();
                let mirror = Csr::from_mask(MatRef::new(&pruned, m, k)?, &keep)?;
                debug_assert_eq!(mirror.values(), w.values());
                let wt = mirror.transpose();
                let dw = vec![0.0; mirror.nnz()];
                Weight::Sparse24 { w, mirror, wt, dw }
            }
            WeightKind::LowRank { rank } => {
                let r = *rank;
                if r == 0 || r > m.min(k) {
                    return Err(invalid(
                        layer,
                        format!("rank {r} must be in 1..={}", m.min(k)),
                    ));
                }
                let (u, v) = truncated_svd(&dense, m, k, r).map_err(|e| invalid(layer, e))?;
                Weight::LowRank {
                    rank: r,
                    du: vec![0.0; u.len()],
                    dv: vec![0.0; v.len()],
                    u,
                    v,
                }
            }
            WeightKind::Lora {
                rank,
                alpha,
                sparse_base,
                seed,
            } => {
                let r = *rank;
                if r == 0 || r > m.min(k) {
                    return Err(invalid(
                        layer,
                        format!("LoRA rank {r} must be in 1..={}", m.min(k)),
                    ));
                }
                // the update is (alpha / r) B A: a NaN or infinite alpha makes every output NaN
                if !alpha.is_finite() {
                    return Err(invalid(layer, format!("LoRA alpha {alpha} must be finite")));
                }
                let base = if *sparse_base {
                    let c = match self {
                        Weight::Masked { mask, .. } => Csr::from_mask(mat, mask)?,
                        _ => Csr::from_dense(mat, 0.0)?,
                    };
                    let t = c.transpose();
                    LoraBase::Csr(c, t)
                } else {
                    LoraBase::Dense(dense)
                };
                let a = crate::util::randn(r * k, 1.0 / (k as f32).sqrt(), *seed);
                Weight::Lora {
                    base,
                    rank: r,
                    alpha: *alpha,
                    da: vec![0.0; r * k],
                    db: vec![0.0; m * r],
                    a,
                    b: vec![0.0; m * r],
                }
            }
        })
    }
}

/// `scale * X (m, r) Y (r, k)` as a new dense (m, k).
fn product(x: &[f32], y: &[f32], m: usize, r: usize, k: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; m * k];
    for i in 0..m {
        for p in 0..r {
            let a = scale * x[i * r + p];
            for j in 0..k {
                out[i * k + j] += a * y[p * k + j];
            }
        }
    }
    out
}

/// Rank-r truncated SVD in f64 through faer: U (M, r) = U_r S_r^(1/2), V (r, K) = S_r^(1/2) V_r^T.
fn truncated_svd(
    w: &[f32],
    m: usize,
    k: usize,
    r: usize,
) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
    let a = faer::Mat::<f64>::from_fn(m, k, |i, j| w[i * k + j] as f64);
    let svd = a
        .thin_svd()
        .map_err(|e| format!("SVD did not converge: {e:?}"))?;
    let (uu, s, vv) = (svd.U(), svd.S().column_vector(), svd.V());
    let mut u = vec![0.0f32; m * r];
    let mut v = vec![0.0f32; r * k];
    for p in 0..r {
        let sq = s[p].max(0.0).sqrt();
        for i in 0..m {
            u[i * r + p] = (uu[(i, p)] * sq) as f32;
        }
        for j in 0..k {
            v[p * k + j] = (vv[(j, p)] * sq) as f32;
        }
    }
    Ok((u, v))
}

//! Products of a sparse [`Linear`] on one feature-major panel: `a (K, r)` in, `c (M, r)` out, on
//! the calling thread. A model that splits its rows into panels (see `panels::mlp_forward`) runs
//! these from several threads at once (`&self`); each thread accumulates its parameter gradients
//! into its own [`PanelGrads`], added to the layer's afterwards ([`Linear::add_panel_grads`]).
//!   forward  `c = W a + b`;
//!   backward `c = W^T b` and `dW += b a^T` at the pattern in one pass over the cached transpose
//!            (`spmm_t_sddmm`: each row of `b` it loads feeds both), `db +=` row sums of `b`,
//!            `G += b a^T` when a dense gradient is requested.
use super::Linear;
use crate::kernels::add_row_sums;
use crate::util::ensure;
use crate::{Precision, Result, Weight};
use lopper_sparse::{spmm, spmm_24, spmm_24_bias, spmm_bias, spmm_t_sddmm};
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};

/// One thread's parameter gradients of one layer over the panels it ran (zeroed by
/// [`PanelGrads::reset`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct PanelGrads {
    /// dW at the stored entries (nnz), in the order of the cached transpose's entries (what
    /// `spmm_t_sddmm` produces; [`Linear::add_panel_grads`] maps it back through the permutation).
    w: Vec<f32>,
    /// db (M), empty without a bias.
    b: Vec<f32>,
    /// The dense gradient (M, K) while requested, else empty.
    g: Vec<f32>,
}

impl PanelGrads {
    /// Sizes the buffers for `l` and zeroes them.
    pub(crate) fn reset(&mut self, l: &Linear) {
        let nnz = l.panel_nnz();
        let bias = l.bias.as_ref().map_or(0, |(b, _)| b.len());
        let dense = l.dense_grad.as_ref().map_or(0, Vec::len);
        for (v, len) in [
            (&mut self.w, nnz),
            (&mut self.b, bias),
            (&mut self.g, dense),
        ] {
            ensure(v, len);
            v.fill(0.0);
        }
    }
}

impl Linear {
    /// Whether this layer runs on panels: a Csr or 2:4 weight in f32.
    pub(crate) fn panel_native(&self) -> bool {
        self.precision == Precision::F32
            && matches!(self.weight, Weight::Csr { .. } | Weight::Sparse24 { .. })
    }

    fn panel_nnz(&self) -> usize {
        match &self.weight {
            Weight::Csr { w, .. } => w.nnz(),
            Weight::Sparse24 { mirror, .. } => mirror.nnz(),
            _ => 0,
        }
    }

    /// Before a backward on panels: brings the cached transpose up to the current values.
    pub(crate) fn prepare_panel_backward(&mut self) -> Result<()> {
        match &mut self.weight {
            Weight::Csr { w, wt, .. } => wt.refresh_par(w, self.par)?,
            Weight::Sparse24 { w, mirror, wt, .. } => {
                mirror.values_mut().copy_from_slice(w.values());
                wt.refresh_par(mirror, self.par)?;
            }
            _ => return Err(self.not_panel()),
        }
        Ok(())
    }

    fn not_panel(&self) -> crate::Error {
        crate::error::invalid(
            &self.name,
            format!(
                "panel products need a csr or 2:4 weight in f32, not {} in {:?}",
                self.weight.kind_name(),
                self.precision
            ),
        )
    }

    /// Before the forward panels of a step: builds what a Csr or 2:4 weight's CPU kernel keeps
    /// (its order of the entries, and the values in that order after they changed) with the
    /// layer's threads, once, instead of in every part that runs a panel
    /// ([`lopper_sparse::Csr::prepare`], [`lopper_sparse::Sparse24::prepare`]).
    pub(crate) fn prepare_panel_forward(&self) {
        match &self.weight {
            Weight::Csr { w, .. } => w.prepare(self.par),
            Weight::Sparse24 { w, .. } => w.prepare(self.par),
            _ => {}
        }
    }

    /// `c (M, r) = W a (K, r) + b`, single-threaded. `a` should start on a 64-byte boundary (the
    /// kernels then read it in place).
    pub(crate) fn forward_panel(&self, a: &[f32], r: usize, c: &mut [f32]) -> Result<()> {
        let (m, k) = (self.out_features, self.in_features);
        self.check("panel input", a.len(), r, k)?;
        self.check("panel output", c.len(), r, m)?;
        if r == 0 {
            return Ok(());
        }
        let (am, cm) = (MatRef::new(a, k, r)?, MatMut::new(c, m, r)?);
        // the bias is added as the kernels store each row
        let bias = self.bias.as_ref().map(|(b, _)| b.as_slice());
        match (&self.weight, bias) {
            (Weight::Csr { w, .. }, Some(b)) => spmm_bias(w, am, b, cm, Par::Seq)?,
            (Weight::Csr { w, .. }, None) => spmm(w, am, cm, Par::Seq)?,
            (Weight::Sparse24 { w, .. }, Some(b)) => spmm_24_bias(w, am, b, cm, Par::Seq)?,
            (Weight::Sparse24 { w, .. }, None) => spmm_24(w, am, cm, Par::Seq)?,
            _ => return Err(self.not_panel()),
        }
        Ok(())
    }

    /// Given the forward's panel `a (K, r)` and the output gradient `b (M, r)`: gradients `+=`
    /// into `acc` (see the module doc), `c (K, r) =` the input gradient. Single-threaded; call
    /// [`Linear::prepare_panel_backward`] once before the panels of a step.
    pub(crate) fn backward_panel(
        &self,
        a: &[f32],
        b: &[f32],
        r: usize,
        acc: &mut PanelGrads,
        c: &mut [f32],
    ) -> Result<()> {
        let (m, k) = (self.out_features, self.in_features);
        self.check("panel input", a.len(), r, k)?;
        self.check("panel output gradient", b.len(), r, m)?;
        self.check("panel input gradient", c.len(), r, k)?;
        if r == 0 {
            return Ok(());
        }
        let (pattern, wt) = match &self.weight {
            Weight::Csr { w, wt, .. } => (w, wt),
            Weight::Sparse24 { mirror, wt, .. } => (mirror, wt),
            _ => return Err(self.not_panel()),
        };
        if acc.w.len() != pattern.nnz() {
            return Err(crate::error::shape(
                &self.name,
                "panel gradients not reset for this layer",
            ));
        }
        let (am, bm) = (MatRef::new(a, k, r)?, MatRef::new(b, m, r)?);
        // c (K, r) = W^T b, and dW[q = (j, i) of W^T] += a[j] . b[i]
        spmm_t_sddmm(wt, bm, am, MatMut::new(c, k, r)?, &mut acc.w, Par::Seq)?;
        if !acc.b.is_empty() {
            add_row_sums(b, r, &mut acc.b); // db (M) += row sums of b
        }
        if !acc.g.is_empty() {
            let g = MatMut::new(&mut acc.g, m, k)?;
            gemm(g, bm, Transpose::No, am, Transpose::Yes, 1.0, 1.0, Par::Seq)?; // G += b a^T
        }
        Ok(())
    }

    /// Adds the threads' panel gradients into the layer's. The weight gradients are in the
    /// transpose's order; they are summed (into the first part) and read back into W's order,
    /// `dW[p] += sum[inv[p]]`, both passes split over the layer's threads by ranges
    /// ([`crate::util::add_gathered`]). Before, the sum and a scatter through the permutation ran
    /// on the calling thread while the other cores waited (1.3% of a sparse GPT step's CPU time,
    /// all of it serial); a scatter split over two threads was slower still (the threads' random
    /// writes share cache lines).
    pub(crate) fn add_panel_grads(&mut self, parts: &mut [&mut PanelGrads]) -> Result<()> {
        let par = self.par;
        let (dw, inv) = match &mut self.weight {
            Weight::Csr { dw, wt, .. } | Weight::Sparse24 { dw, wt, .. } => (dw, wt.inv_perm()),
            _ => return Err(self.not_panel()),
        };
        let (bias, dense) = (
            self.bias.as_ref().map_or(0, |(b, _)| b.len()),
            self.dense_grad.as_ref().map_or(0, Vec::len),
        );
        let mismatch = |acc: &PanelGrads| {
            dw.len() != acc.w.len() || bias != acc.b.len() || dense != acc.g.len()
        };
        if inv.len() != dw.len() || parts.iter().any(|a| mismatch(a)) {
            return Err(crate::error::shape(
                &self.name,
                "panel gradients were sized for another weight (kind or dense-gradient request changed between forward and backward)",
            ));
        }
        let mut ws: Vec<&mut [f32]> = parts.iter_mut().map(|a| a.w.as_mut_slice()).collect();
        crate::util::add_gathered(dw, inv, &mut ws, par);
        let Some((first, rest)) = parts.split_first_mut() else {
            return Ok(());
        };
        for acc in rest.iter() {
            crate::util::add_into(&mut first.b, &acc.b);
            crate::util::add_into(&mut first.g, &acc.g);
        }
        if let Some((_, db)) = &mut self.bias {
            crate::util::add_into(db, &first.b);
        }
        if let Some(g) = &mut self.dense_grad {
            crate::util::add_into_par(g, &first.g, par);
        }
        Ok(())
    }
}

//! Sparse Linear products on row panels: the transposes the CSR kernels need (they work on
//! feature-major `X^T (K, N)`) are done per panel of `PANEL` rows, into per-thread buffers that
//! stay in cache, instead of over whole (N, K) activations. The buffers the kernels read as their
//! dense operand start on a 64-byte boundary, so the kernels read them in place (no second copy).
//!
//! Rows 0..N are split into one contiguous part per thread (rayon), each part walked in panels:
//!   forward:  a (K, r) = x[panel]^T;  c (M, r) = W a (spmm);  y[panel] = c^T.
//!   backward: a = x[panel]^T;  b (M, r) = dy[panel]^T;  g (nnz) += sddmm(W, b, a) (the part's sum);
//!             c (K, r) = W^T b (spmm with the cached transpose);  dx[panel] = c^T;
//!   and dW += the parts' g.
//! The kernels run single-threaded inside a part (`Par::Seq`): one pool, the caller's rayon.
use crate::activation::{gelu_backward_from_output, gelu_forward_par};
use crate::error::shape;
use crate::kernels::transpose;
use crate::linear::PanelGrads;
use crate::util::{aligned, ensure};
use crate::{Linear, Result};
use lopper_sparse::{Csr, CsrTranspose, Sparse24, spmm, spmm_24, spmm_t_sddmm};
use lopper_tensor::{MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows per panel: the kernels' 128-wide AVX-512 tile, and a (K, 128) panel of at most 512 KiB
/// for K <= 1024.
const PANEL: usize = 128;

/// One part's buffers (grown on first use, reused by every later step).
#[derive(Clone, Debug, Default)]
pub(crate) struct PartBufs {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    gsum: Vec<f32>,
}

/// The forward kernel of a sparse weight: `c (M, r) = W a (K, r)`.
pub(crate) enum Fwd<'a> {
    Csr(&'a Csr),
    S24(&'a Sparse24),
}

/// Rows per part for `n` rows on `par`'s threads (a multiple of [`PANEL`] except the last).
fn part_rows(n: usize, par: Par) -> usize {
    let parts = par.threads().clamp(1, n.div_ceil(PANEL).max(1));
    n.div_ceil(parts).div_ceil(PANEL) * PANEL
}

/// Runs `f(i, chunk, bufs[i])` over the `chunk`-long chunks of `out` (the last may be shorter), in
/// parallel when there are several; `bufs` grows to one per chunk (at least one).
pub(crate) fn run_chunks<B, F>(out: &mut [f32], chunk: usize, bufs: &mut Vec<B>, f: F) -> Result<()>
where
    B: Default + Send,
    F: Fn(usize, &mut [f32], &mut B) -> Result<()> + Sync + Send,
{
    let parts = out.len().div_ceil(chunk.max(1)).max(1);
    if bufs.len() < parts {
        bufs.resize_with(parts, B::default);
    }
    if parts > 1 {
        out.par_chunks_mut(chunk)
            .zip(bufs.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (o, b))| f(i, o, b))
    } else {
        f(0, out, &mut bufs[0])
    }
}

/// Runs `f(first_row, out_chunk, bufs)` over the parts of `n` rows of `width`, in parallel when
/// `par` has threads.
fn run_parts<F>(
    n: usize,
    width: usize,
    out: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
    f: F,
) -> Result<()>
where
    F: Fn(usize, &mut [f32], &mut PartBufs) -> Result<()> + Sync + Send,
{
    if n == 0 || width == 0 {
        return Ok(());
    }
    let rows = part_rows(n, par);
    run_chunks(out, rows * width, bufs, |i, o, b| f(i * rows, o, b))
}

/// `y (n, m) = x (n, k) W^T` through panels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: Fwd<'_>,
    x: &[f32],
    n: usize,
    m: usize,
    k: usize,
    y: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
) -> Result<()> {
    // the kernels' own orders of W, once, before the parts (each would build its own copy)
    match w {
        Fwd::Csr(w) => w.prepare(par),
        Fwd::S24(w) => w.prepare(par),
    }
    run_parts(n, m, y, bufs, par, |row0, y, pb| {
        let rows = y.len() / m;
        for p0 in (0..rows).step_by(PANEL) {
            let r = PANEL.min(rows - p0);
            let (g0, g1) = (row0 + p0, row0 + p0 + r);
            let a = aligned(&mut pb.a, k * r);
            ensure(&mut pb.c, m * r);
            transpose(&x[g0 * k..g1 * k], r, k, a, Par::Seq); // a (K, r)
            let (am, cm) = (MatRef::new(a, k, r)?, MatMut::new(&mut pb.c, m, r)?);
            match w {
                Fwd::Csr(w) => spmm(w, am, cm, Par::Seq)?, // c (M, r) = W a
                Fwd::S24(w) => spmm_24(w, am, cm, Par::Seq)?,
            }
            transpose(&pb.c, m, r, &mut y[p0 * m..(p0 + r) * m], Par::Seq); // y[panel] = c^T
        }
        Ok(())
    })
}

/// `dx (n, k) = dy W` and `dw (nnz) +=` (dy^T x) at W's pattern, through panels, both in one pass
/// per panel (`spmm_t_sddmm` over the cached transpose).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    wt: &CsrTranspose,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    n: usize,
    m: usize,
    k: usize,
    dx: &mut [f32],
    bufs: &mut Vec<PartBufs>,
    par: Par,
) -> Result<()> {
    let nnz = wt.csr().nnz();
    if n == 0 || k == 0 {
        return Ok(()); // no rows: no gradient (and no part ran to refresh its sum)
    }
    run_parts(n, k, dx, bufs, par, |row0, dx, pb| {
        let rows = dx.len() / k;
        ensure(&mut pb.gsum, nnz);
        pb.gsum.fill(0.0);
        for p0 in (0..rows).step_by(PANEL) {
            let r = PANEL.min(rows - p0);
            let (g0, g1) = (row0 + p0, row0 + p0 + r);
            let a = aligned(&mut pb.a, k * r);
            let b = aligned(&mut pb.b, m * r);
            ensure(&mut pb.c, k * r);
            transpose(&x[g0 * k..g1 * k], r, k, a, Par::Seq); // a (K, r) = x^T
            transpose(&dy[g0 * m..g1 * m], r, m, b, Par::Seq); // b (M, r) = dy^T
            let (am, bm) = (MatRef::new(a, k, r)?, MatRef::new(b, m, r)?);
            // c (K, r) = W^T b, and gsum[q = (j, i) of W^T] += a[j] . b[i] (the transpose's order)
            let c = MatMut::new(&mut pb.c, k, r)?;
            spmm_t_sddmm(wt, bm, am, c, &mut pb.gsum, Par::Seq)?;
            transpose(&pb.c, k, r, &mut dx[p0 * k..(p0 + r) * k], Par::Seq); // dx[panel] = c^T
        }
        Ok(())
    })?;
    // every part ran and refreshed its sum above: add them into W's order in one pass (see
    // Linear::add_panel_grads)
    let parts = n.div_ceil(part_rows(n, par)).max(1);
    if wt.inv_perm().len() != dw.len() {
        return Err(shape(
            "sparse backward",
            "dW and the transpose have different lengths",
        ));
    }
    let mut sums: Vec<&mut [f32]> = bufs[..parts]
        .iter_mut()
        .map(|pb| pb.gsum.as_mut_slice())
        .collect();
    crate::util::add_gathered(dw, wt.inv_perm(), &mut sums, par);
    Ok(())
}

/// One part's buffers of [`mlp_forward`] and [`mlp_backward`] (grown on first use, reused).
#[derive(Clone, Debug, Default)]
pub(crate) struct MlpBufs {
    c: Vec<f32>,
    b: Vec<f32>,
    d1: Vec<f32>,
    d2: Vec<f32>,
    fc: PanelGrads,
    proj: PanelGrads,
}

/// The activations an MLP on panels saves for its backward, panel-major: the (F, n) matrix of
/// features F stored as its panels of rows p0..p0+r, each (F, r) row-major at offset p0 * F. All
/// three start on a 64-byte boundary (so does every panel: p0 is a multiple of [`PANEL`]).
pub(crate) struct MlpSaved<'a> {
    /// x^T (C, n): the input's panels, transposed.
    pub xt: &'a mut [f32],
    /// fc's output (4C, n), before GELU.
    pub h: &'a mut [f32],
    /// GELU(h) (4C, n).
    pub g: &'a mut [f32],
}

/// Checks the MLP's shapes: fc (C -> H), proj (H -> C), and each buffer `(what, len, width)`
/// holding n rows of `width`.
fn check_mlp(fc: &Linear, proj: &Linear, n: usize, bufs: &[(&str, usize, usize)]) -> Result<()> {
    let (c, h) = (fc.in_features(), fc.out_features());
    if proj.in_features() != h || proj.out_features() != c {
        return Err(shape(
            &proj.name,
            format!(
                "mlp on panels: fc is {c} -> {h}, proj is {} -> {} (need {h} -> {c})",
                proj.in_features(),
                proj.out_features()
            ),
        ));
    }
    for &(what, len, width) in bufs {
        if len != n * width {
            return Err(shape(
                "mlp on panels",
                format!("{what} has {len} elements, expected {n} rows x {width}"),
            ));
        }
    }
    Ok(())
}

/// `y (n, C) = proj(GELU(fc(x)))` for x (n, C), through panels: per panel of rows,
/// `xt = x^T (C, r)` (saved), `h = fc xt (4C, r)` (saved), `g = GELU(h)` (saved),
/// `c = proj g (C, r)`, `y[panel] = c^T`. Both layers must be [`Linear::panel_native`].
/// Everything of a panel stays in the core's cache; the products read their operands in place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mlp_forward(
    fc: &Linear,
    proj: &Linear,
    x: &[f32],
    n: usize,
    saved: MlpSaved<'_>,
    y: &mut [f32],
    bufs: &mut Vec<MlpBufs>,
    par: Par,
) -> Result<()> {
    let (c, hid) = (fc.in_features(), fc.out_features());
    let lens = [
        ("input", x.len(), c),
        ("output", y.len(), c),
        ("saved x^T", saved.xt.len(), c),
        ("saved h", saved.h.len(), hid),
        ("saved gelu", saved.g.len(), hid),
    ];
    check_mlp(fc, proj, n, &lens)?;
    if n == 0 {
        return Ok(());
    }
    fc.prepare_panel_forward();
    proj.prepare_panel_forward();
    let rows = part_rows(n, par);
    let parts = n.div_ceil(rows);
    if bufs.len() < parts {
        bufs.resize_with(parts, MlpBufs::default);
    }
    let work = |row0: usize,
                y: &mut [f32],
                xt: &mut [f32],
                h: &mut [f32],
                g: &mut [f32],
                pb: &mut MlpBufs|
     -> Result<()> {
        let nr = y.len() / c;
        for p0 in (0..nr).step_by(PANEL) {
            let r = PANEL.min(nr - p0);
            let g0 = row0 + p0;
            let a = &mut xt[p0 * c..(p0 + r) * c];
            transpose(&x[g0 * c..(g0 + r) * c], r, c, a, Par::Seq); // a (C, r)
            let hp = &mut h[p0 * hid..(p0 + r) * hid];
            fc.forward_panel(a, r, hp)?; // h (4C, r)
            let gp = &mut g[p0 * hid..(p0 + r) * hid];
            gelu_forward_par(hp, gp, Par::Seq)?;
            ensure(&mut pb.c, c * r);
            proj.forward_panel(gp, r, &mut pb.c)?; // (C, r)
            transpose(&pb.c, c, r, &mut y[p0 * c..(p0 + r) * c], Par::Seq); // y[panel] = c^T
        }
        Ok(())
    };
    let MlpSaved { xt, h, g } = saved;
    if parts > 1 {
        y.par_chunks_mut(rows * c)
            .zip(xt.par_chunks_mut(rows * c))
            .zip(h.par_chunks_mut(rows * hid))
            .zip(g.par_chunks_mut(rows * hid))
            .zip(bufs.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, ((((y, xt), h), g), pb))| work(i * rows, y, xt, h, g, pb))
    } else {
        work(0, y, xt, h, g, &mut bufs[0])
    }
}

/// The backward of [`mlp_forward`] from its saved panels: `dx (n, C) =` the input gradient, and
/// both layers' parameter gradients `+=` (each part accumulates its own, added at the end). Per
/// panel: `b = dy^T`; proj: `dW += sddmm(b, g)`, `dg = W^T b`; `dh = GELU'(h) dg`; fc:
/// `dW += sddmm(dh, xt)`, `da = W^T dh`; `dx[panel] = da^T`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mlp_backward(
    fc: &mut Linear,
    proj: &mut Linear,
    saved: (&[f32], &[f32], &[f32]),
    dy: &[f32],
    n: usize,
    dx: &mut [f32],
    bufs: &mut Vec<MlpBufs>,
    par: Par,
) -> Result<()> {
    let (c, hid) = (fc.in_features(), fc.out_features());
    let (xt, h, g) = saved;
    let lens = [
        ("output gradient", dy.len(), c),
        ("input gradient", dx.len(), c),
        ("saved x^T", xt.len(), c),
        ("saved h", h.len(), hid),
        ("saved gelu", g.len(), hid),
    ];
    check_mlp(fc, proj, n, &lens)?;
    if n == 0 {
        return Ok(());
    }
    fc.prepare_panel_backward()?;
    proj.prepare_panel_backward()?;
    let rows = part_rows(n, par);
    let parts = n.div_ceil(rows);
    let (fc_ref, proj_ref) = (&*fc, &*proj);
    let work = |row0: usize, dx: &mut [f32], pb: &mut MlpBufs| -> Result<()> {
        pb.fc.reset(fc_ref);
        pb.proj.reset(proj_ref);
        let nr = dx.len() / c;
        for p0 in (0..nr).step_by(PANEL) {
            let r = PANEL.min(nr - p0);
            let g0 = row0 + p0;
            let (a, hp, gp) = (
                &xt[g0 * c..(g0 + r) * c],
                &h[g0 * hid..(g0 + r) * hid],
                &g[g0 * hid..(g0 + r) * hid],
            );
            let b = aligned(&mut pb.b, c * r);
            transpose(&dy[g0 * c..(g0 + r) * c], r, c, b, Par::Seq); // b (C, r) = dy^T
            ensure(&mut pb.d1, hid * r);
            proj_ref.backward_panel(gp, b, r, &mut pb.proj, &mut pb.d1)?; // dg (4C, r)
            let dh = aligned(&mut pb.d2, hid * r);
            gelu_backward_from_output(hp, gp, &pb.d1, dh, Par::Seq)?; // dh (4C, r)
            ensure(&mut pb.c, c * r);
            fc_ref.backward_panel(a, dh, r, &mut pb.fc, &mut pb.c)?; // da (C, r)
            transpose(&pb.c, c, r, &mut dx[p0 * c..(p0 + r) * c], Par::Seq); // dx[panel] = da^T
        }
        Ok(())
    };
    run_chunks(dx, rows * c, bufs, |i, dx, pb| work(i * rows, dx, pb))?;
    let (mut gx, mut gy): (Vec<_>, Vec<_>) = bufs[..parts]
        .iter_mut()
        .map(|pb| (&mut pb.fc, &mut pb.proj))
        .unzip();
    fc.add_panel_grads(&mut gx)?;
    proj.add_panel_grads(&mut gy)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::WeightKind;

    /// A Linear with a bias, Csr (2 of every 3 weights kept) when `csr`, else dense.
    pub(crate) fn layer(name: &str, k: usize, m: usize, csr: bool) -> Linear {
        let mut l = Linear::new(name, k, m, true, 0.5, k as u64 * 31 + m as u64);
        if csr {
            let mask = (0..k * m).map(|i| i % 3 != 1).collect();
            l.set_kind(&WeightKind::CsrMask(mask)).unwrap();
        }
        l
    }

    #[test]
    fn mlp_on_panels_equals_the_layers_row_major_and_rejects_bad_buffers() {
        let (c, h, n) = (8, 20, 5);
        let (mut fc, mut proj) = (layer("fc", c, h, true), layer("proj", h, c, true));
        let x: Vec<f32> = (0..n * c)
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
            .collect();
        let (mut xt, mut hh, mut g, mut y) = (
            vec![0.0; n * c],
            vec![0.0; n * h],
            vec![0.0; n * h],
            vec![0.0; n * c],
        );
        let mut bufs = Vec::new();
        let saved = MlpSaved {
            xt: &mut xt,
            h: &mut hh,
            g: &mut g,
        };
        mlp_forward(&fc, &proj, &x, n, saved, &mut y, &mut bufs, Par::Seq).unwrap();
        // the same through the layers' row-major forwards
        let (mut h1, mut g1, mut y1) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * c]);
        fc.forward(&x, n, &mut h1).unwrap();
        gelu_forward_par(&h1, &mut g1, Par::Seq).unwrap();
        proj.forward(&g1, n, &mut y1).unwrap();
        for (a, b) in y.iter().zip(&y1) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // a buffer of the wrong length: a shape error naming it, nothing written to y
        let before = y.clone();
        let mut short = vec![0.0; n * h - 1];
        let saved = MlpSaved {
            xt: &mut xt,
            h: &mut short,
            g: &mut g,
        };
        let e = mlp_forward(&fc, &proj, &x, n, saved, &mut y, &mut bufs, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("saved h"), "{e}");
        assert_eq!(y, before);
        let e = mlp_backward(
            &mut fc,
            &mut proj,
            (&xt, &hh, &g),
            &y[1..],
            n,
            &mut vec![0.0; n * c],
            &mut bufs,
            Par::Seq,
        )
        .unwrap_err();
        assert!(e.to_string().contains("output gradient"), "{e}");
        // layers that do not match (proj not H -> C), or a dense layer: errors, not panics
        let wrong = layer("proj", h, c + 1, true);
        let saved = MlpSaved {
            xt: &mut xt,
            h: &mut hh,
            g: &mut g,
        };
        let e = mlp_forward(&fc, &wrong, &x, n, saved, &mut y, &mut bufs, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("need 20 -> 8"), "{e}");
        let dense = layer("fc", c, h, false);
        assert!(!dense.panel_native());
        let saved = MlpSaved {
            xt: &mut xt,
            h: &mut hh,
            g: &mut g,
        };
        let e = mlp_forward(&dense, &proj, &x, n, saved, &mut y, &mut bufs, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("csr or 2:4"), "{e}");
    }
}

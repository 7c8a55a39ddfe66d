//! The attention half of a GPT block on feature-major sequence panels, when `qkv` and `proj` are
//! both sparse ([`Linear::panel_native`]: Csr or 2:4 in f32). Per sequence of T rows:
//!   forward:  xt = x^T (C, T) (saved);  qkvt = W_qkv xt (3C, T) (saved);
//!             yt = attention of qkvt (C, T) (saved; probabilities into the cache);
//!             c = W_proj yt (C, T);  y[seq] = c^T;
//!   backward: b = dy^T (C, T);  proj: dW += sddmm(b, yt), d1 = W^T b (C, T);
//!             d3 = attention backward (3C, T);  qkv: dW += sddmm(d3, xt), c = W^T d3;
//!             dx[seq] = c^T.
//! Attention reads and writes the layout the sparse products work in, so a row costs four
//! transposes of C values (x in, y out, dy in, dx out) instead of the fourteen of the layers' own
//! panels (qkv's 3C output and its gradient, proj's input, the backward's operands), and a
//! sequence's panels stay in the core's cache from one product to the next.
//! The sequences are split into one contiguous part per thread (rayon); each part accumulates its
//! own parameter gradients, added at the end. Activation gradients `=`, parameter gradients `+=`.
use crate::attention::{AttnCache, AttnShape, seq_backward_t, seq_forward_t};
use crate::error::shape;
use crate::kernels::transpose;
use crate::linear::PanelGrads;
use crate::panels::run_chunks;
use crate::util::{aligned, ensure};
use crate::{Linear, Result};
use lopper_tensor::Par;
use rayon::prelude::*;

/// The activations the forward saves for the backward, sequence-major: the (F, n) matrix of
/// features F stored as one (F, T) row-major panel per sequence, at offset seq * F * T.
pub(crate) struct AttnSaved<'a> {
    /// x^T (C, n): the input's panels.
    pub xt: &'a mut [f32],
    /// qkv's output (3C, n).
    pub qkvt: &'a mut [f32],
    /// attention's output (C, n), proj's input.
    pub yt: &'a mut [f32],
}

/// One part's buffers (grown on first use, reused by every later step).
#[derive(Clone, Debug, Default)]
pub(crate) struct AttnBufs {
    c: Vec<f32>,
    b: Vec<f32>,
    d1: Vec<f32>,
    d3: Vec<f32>,
    datt: Vec<f32>,
    qkv: PanelGrads,
    proj: PanelGrads,
}

/// Checks the layers (qkv C -> 3C, proj C -> C, C a multiple of the heads) and each buffer
/// `(what, len, width)` holding n rows of `width`.
fn check(qkv: &Linear, proj: &Linear, s: &AttnShape, bufs: &[(&str, usize, usize)]) -> Result<()> {
    let c = s.c;
    let bad = |l: &Linear, out: usize| l.in_features() != c || l.out_features() != out;
    if bad(qkv, 3 * c) || bad(proj, c) || s.heads == 0 || !c.is_multiple_of(s.heads) {
        return Err(shape(
            &proj.name,
            format!(
                "attention on panels: width {c}, {} heads, qkv {} -> {}, proj {} -> {} (need {c} -> {}, {c} -> {c}, width a multiple of the heads)",
                s.heads,
                qkv.in_features(),
                qkv.out_features(),
                proj.in_features(),
                proj.out_features(),
                3 * c
            ),
        ));
    }
    let n = s.b * s.t;
    for &(what, len, width) in bufs {
        if len != n * width {
            return Err(shape(
                "attention on panels",
                format!("{what} has {len} elements, expected {n} rows x {width}"),
            ));
        }
    }
    Ok(())
}

/// Sequences per part for `b` sequences on `par`'s threads.
fn seqs_per_part(b: usize, par: Par) -> usize {
    b.div_ceil(par.threads().clamp(1, b.max(1))).max(1)
}

/// `y (n, C) = proj(attention(qkv(x)))` for x (n, C), n = B*T rows by sequence, through
/// sequence panels (see the module doc); fills `saved` and the probabilities of `cache`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attn_forward(
    qkv: &Linear,
    proj: &Linear,
    x: &[f32],
    s: AttnShape,
    saved: AttnSaved<'_>,
    cache: &mut AttnCache,
    y: &mut [f32],
    bufs: &mut Vec<AttnBufs>,
    par: Par,
) -> Result<()> {
    let (t, c, nh) = (s.t, s.c, s.heads);
    let lens = [
        ("input", x.len(), c),
        ("output", y.len(), c),
        ("saved x^T", saved.xt.len(), c),
        ("saved qkv^T", saved.qkvt.len(), 3 * c),
        ("saved y^T", saved.yt.len(), c),
    ];
    check(qkv, proj, &s, &lens)?;
    if s.b * t == 0 {
        return Ok(());
    }
    let att = cache.probs_mut(s.b * nh * t * t);
    qkv.prepare_panel_forward();
    proj.prepare_panel_forward();
    let sp = seqs_per_part(s.b, par);
    let parts = s.b.div_ceil(sp);
    if bufs.len() < parts {
        bufs.resize_with(parts, AttnBufs::default);
    }
    let work = |s0: usize,
                y: &mut [f32],
                xt: &mut [f32],
                qkvt: &mut [f32],
                yt: &mut [f32],
                att: &mut [f32],
                pb: &mut AttnBufs|
     -> Result<()> {
        for j in 0..y.len() / (t * c) {
            let g0 = (s0 + j) * t; // first row of the sequence
            let a = &mut xt[j * c * t..(j + 1) * c * t];
            transpose(&x[g0 * c..(g0 + t) * c], t, c, a, Par::Seq); // a (C, T) = x^T
            let q = &mut qkvt[j * 3 * c * t..(j + 1) * 3 * c * t];
            qkv.forward_panel(a, t, q)?; // (3C, T)
            let yp = &mut yt[j * c * t..(j + 1) * c * t];
            seq_forward_t(
                q,
                t,
                c,
                nh,
                &mut att[j * nh * t * t..(j + 1) * nh * t * t],
                yp,
            );
            ensure(&mut pb.c, c * t);
            proj.forward_panel(yp, t, &mut pb.c)?; // (C, T)
            transpose(&pb.c, c, t, &mut y[j * t * c..(j + 1) * t * c], Par::Seq); // y = c^T
        }
        Ok(())
    };
    let AttnSaved { xt, qkvt, yt } = saved;
    let (rc, r3, ra) = (sp * t * c, sp * t * 3 * c, sp * nh * t * t);
    if parts > 1 {
        y.par_chunks_mut(rc)
            .zip(xt.par_chunks_mut(rc))
            .zip(qkvt.par_chunks_mut(r3))
            .zip(yt.par_chunks_mut(rc))
            .zip(att.par_chunks_mut(ra))
            .zip(bufs.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (((((y, xt), q), yt), at), pb))| work(i * sp, y, xt, q, yt, at, pb))
    } else {
        work(0, y, xt, qkvt, yt, att, &mut bufs[0])
    }
}

/// The backward of [`attn_forward`] from its saved panels `(xt, qkvt, yt)` and `cache`:
/// `dx (n, C) =` the input gradient given `dy (n, C)`, both layers' parameter gradients `+=`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attn_backward(
    qkv: &mut Linear,
    proj: &mut Linear,
    saved: (&[f32], &[f32], &[f32]),
    cache: &AttnCache,
    dy: &[f32],
    s: AttnShape,
    dx: &mut [f32],
    bufs: &mut Vec<AttnBufs>,
    par: Par,
) -> Result<()> {
    let (t, c, nh) = (s.t, s.c, s.heads);
    let (xt, qkvt, yt) = saved;
    let lens = [
        ("output gradient", dy.len(), c),
        ("input gradient", dx.len(), c),
        ("saved x^T", xt.len(), c),
        ("saved qkv^T", qkvt.len(), 3 * c),
        ("saved y^T", yt.len(), c),
    ];
    check(qkv, proj, &s, &lens)?;
    let att = cache.probs();
    if att.len() != s.b * nh * t * t {
        return Err(shape(
            "attention on panels",
            format!(
                "cached probabilities have {} elements, expected {} x {nh} x {t} x {t}",
                att.len(),
                s.b
            ),
        ));
    }
    if s.b * t == 0 {
        return Ok(());
    }
    qkv.prepare_panel_backward()?;
    proj.prepare_panel_backward()?;
    let sp = seqs_per_part(s.b, par);
    let parts = s.b.div_ceil(sp);
    let (qkv_ref, proj_ref) = (&*qkv, &*proj);
    let work = |s0: usize, dx: &mut [f32], pb: &mut AttnBufs| -> Result<()> {
        pb.qkv.reset(qkv_ref);
        pb.proj.reset(proj_ref);
        for j in 0..dx.len() / (t * c) {
            let sq = s0 + j;
            let g0 = sq * t;
            let b = aligned(&mut pb.b, c * t);
            transpose(&dy[g0 * c..(g0 + t) * c], t, c, b, Par::Seq); // b (C, T) = dy^T
            ensure(&mut pb.d1, c * t);
            let yp = &yt[g0 * c..(g0 + t) * c];
            proj_ref.backward_panel(yp, b, t, &mut pb.proj, &mut pb.d1)?; // d1 (C, T)
            let d3 = aligned(&mut pb.d3, 3 * c * t);
            ensure(&mut pb.datt, t * t);
            let (q, at) = (
                &qkvt[g0 * 3 * c..(g0 + t) * 3 * c],
                &att[sq * nh * t * t..(sq + 1) * nh * t * t],
            );
            seq_backward_t(q, &pb.d1, t, c, nh, at, &mut pb.datt, d3); // d3 (3C, T)
            ensure(&mut pb.c, c * t);
            let a = &xt[g0 * c..(g0 + t) * c];
            qkv_ref.backward_panel(a, d3, t, &mut pb.qkv, &mut pb.c)?; // (C, T)
            transpose(&pb.c, c, t, &mut dx[j * t * c..(j + 1) * t * c], Par::Seq); // dx = c^T
        }
        Ok(())
    };
    run_chunks(dx, sp * t * c, bufs, |i, dx, pb| work(i * sp, dx, pb))?;
    let (mut gx, mut gy): (Vec<_>, Vec<_>) = bufs[..parts]
        .iter_mut()
        .map(|pb| (&mut pb.qkv, &mut pb.proj))
        .unzip();
    qkv.add_panel_grads(&mut gx)?;
    proj.add_panel_grads(&mut gy)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::tests::layer;

    #[test]
    fn bad_layers_and_buffers_are_errors_naming_them() {
        let (b, t, c) = (2, 3, 4);
        let n = b * t;
        let s = AttnShape {
            b,
            t,
            c,
            heads: 2,
            par: Par::Seq,
        };
        let (qkv, proj) = (layer("qkv", c, 3 * c, true), layer("proj", c, c, true));
        let x = vec![0.1; n * c];
        let (mut xt, mut qt, mut yt, mut y) = (
            vec![0.0; n * c],
            vec![0.0; n * 3 * c],
            vec![0.0; n * c],
            vec![0.0; n * c],
        );
        let (mut cache, mut bufs) = (AttnCache::default(), Vec::new());
        let mut run = |q: &Linear, p: &Linear, s: AttnShape, qt: &mut [f32]| {
            let saved = AttnSaved {
                xt: &mut xt,
                qkvt: qt,
                yt: &mut yt,
            };
            attn_forward(q, p, &x, s, saved, &mut cache, &mut y, &mut bufs, Par::Seq)
                .map_err(|e| e.to_string())
        };
        assert!(run(&qkv, &proj, s, &mut qt).is_ok());
        let e = run(&qkv, &proj, s, &mut vec![0.0; n * 3 * c - 1]).unwrap_err();
        assert!(e.contains("saved qkv^T has 71 elements"), "{e}");
        let e = run(&qkv, &layer("proj", c, c + 1, true), s, &mut qt).unwrap_err();
        assert!(e.contains("proj 4 -> 5"), "{e}");
        let e = run(&qkv, &proj, AttnShape { heads: 3, ..s }, &mut qt).unwrap_err();
        assert!(e.contains("3 heads"), "{e}");
        let e = run(&layer("qkv", c, 3 * c, false), &proj, s, &mut qt).unwrap_err();
        assert!(e.contains("csr or 2:4"), "{e}");
        // a backward without the forward's probabilities
        let (mut q, mut p) = (qkv.clone(), proj.clone());
        let e = attn_backward(
            &mut q,
            &mut p,
            (&xt, &qt, &yt),
            &AttnCache::default(),
            &x,
            s,
            &mut vec![0.0; n * c],
            &mut bufs,
            Par::Seq,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cached probabilities"), "{e}");
    }
}

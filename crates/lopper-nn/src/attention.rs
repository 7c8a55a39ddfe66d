//! Causal multi-head self-attention (GPT-2 layout): qkv (B*T, 3C) -> out (B*T, C).
//!
//! Row n of qkv is `[q (C) | k (C) | v (C)]`; head h uses columns `h*hs..(h+1)*hs` of each, hs = C/H.
//! Per batch (in parallel over the B batches), per head, each product a single-threaded faer GEMM
//! on strided views of qkv / out (no gathers), over blocks of `BLOCK` query rows so that the
//! causal upper triangle is skipped block-wise:
//!   pre[i0..i1, 0..i1] = q[i0..i1] k[0..i1]^T / sqrt(hs);  att = softmax over j <= i (0 for j > i);
//!   y[i0..i1] = att[i0..i1, 0..i1] v[0..i1].
use crate::Result;
use crate::error::check_len;
use crate::kernels::{softmax_backward_row, softmax_row};
use crate::util::ensure;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use lopper_tensor::Par;
use rayon::prelude::*;

/// Query rows per causal block: a block of queries only reads keys up to its last row.
const BLOCK: usize = 32;

/// Shape of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Model width C.
    pub c: usize,
    /// Number of heads H (C is a multiple of H).
    pub heads: usize,
    /// Parallelism over the B batches; each batch's GEMMs run on one thread.
    pub par: Par,
}

impl AttnShape {
    fn hs(&self) -> usize {
        self.c / self.heads
    }
    /// FLOPs of forward and backward (dense-equivalent: the full T x T products; the causal blocks
    /// execute about `(1 + BLOCK/T) / 2` of them).
    pub fn flops(&self) -> crate::flops::StepFlops {
        let f = 2 * 2 * (self.b * self.heads * self.t * self.t * self.hs()) as u64;
        crate::flops::StepFlops {
            forward: crate::Flops::same(f),
            backward: crate::Flops::same(2 * f),
        }
    }
}

/// What the backward needs from the forward: the attention probabilities (B, H, T, T) (only the
/// causal blocks are written), a copy of qkv for [`attention_backward`], and the backward's scratch.
#[derive(Clone, Debug, Default)]
pub struct AttnCache {
    qkv: Vec<f32>,
    att: Vec<f32>,
    datt: Vec<f32>,
}

impl AttnCache {
    /// Bytes held (probabilities, the qkv copy of [`attention_forward`], backward scratch).
    pub fn bytes(&self) -> usize {
        4 * (self.qkv.len() + self.att.len() + self.datt.len())
    }
}

/// Runs `f(i, chunk_a, chunk_b)` over matching chunks, in parallel (rayon) or in order.
fn for_chunks2<F>(par: Par, a: &mut [f32], ca: usize, b: &mut [f32], cb: usize, f: F) -> Result<()>
where
    F: Fn(usize, &mut [f32], &mut [f32]) -> Result<()> + Sync + Send,
{
    if par.threads() > 1 {
        a.par_chunks_mut(ca)
            .zip(b.par_chunks_mut(cb))
            .enumerate()
            .try_for_each(|(i, (x, y))| f(i, x, y))
    } else {
        a.chunks_mut(ca)
            .zip(b.chunks_mut(cb))
            .enumerate()
            .try_for_each(|(i, (x, y))| f(i, x, y))
    }
}

fn check_shape(s: &AttnShape, qkv_len: usize) -> Result<()> {
    if s.heads == 0 || !s.c.is_multiple_of(s.heads) {
        return Err(crate::error::invalid(
            "attention",
            format!("width {} is not a multiple of {} heads", s.c, s.heads),
        ));
    }
    check_len("attention", "qkv", qkv_len, s.b * s.t * 3 * s.c)
}

/// The (rows, cols) row-major view of `data` with row stride `rs`, starting at column `c0`.
fn view(data: &[f32], rows: usize, c0: usize, cols: usize, rs: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice_with_stride(&data[c0..c0 + (rows - 1) * rs + cols], rows, cols, rs)
}

/// Mutable [`view`]. (faer 0.24.4's `MatMut::from_row_major_slice_with_stride_mut` builds a
/// column-major view, row stride 1 and column stride `rs`, so it is not used here.)
fn view_mut(data: &mut [f32], rows: usize, c0: usize, cols: usize, rs: usize) -> MatMut<'_, f32> {
    assert!(
        cols <= rs || rows <= 1,
        "attention view: {cols} columns with row stride {rs}"
    );
    let s = &mut data[c0..c0 + (rows - 1) * rs + cols]; // bounds-checked span of the view
    // SAFETY: every element (i, j), i < rows, j < cols, sits at i * rs + j < s.len(), and rows do
    // not overlap (cols <= rs); the view borrows `s` mutably for its lifetime.
    unsafe { MatMut::from_raw_parts_mut(s.as_mut_ptr(), rows, cols, rs as isize, 1) }
}

/// out (B*T, C) `=` attention of qkv (B*T, 3C); fills `cache` (including a copy of qkv for
/// [`attention_backward`]; models that keep qkv call [`attention_forward_qkv`]).
pub fn attention_forward(
    qkv: &[f32],
    s: AttnShape,
    out: &mut [f32],
    cache: &mut AttnCache,
) -> Result<()> {
    check_shape(&s, qkv.len())?;
    cache.qkv.clear();
    cache.qkv.extend_from_slice(qkv);
    attention_forward_qkv(qkv, s, out, cache)
}

/// [`attention_forward`] without the copy of qkv: the caller passes the same qkv to
/// [`attention_backward_qkv`].
pub fn attention_forward_qkv(
    qkv: &[f32],
    s: AttnShape,
    out: &mut [f32],
    cache: &mut AttnCache,
) -> Result<()> {
    let (b, t, c, nh) = (s.b, s.t, s.c, s.heads);
    check_shape(&s, qkv.len())?;
    check_len("attention", "output", out.len(), b * t * c)?;
    if b * t == 0 {
        return Ok(());
    }
    let hs = s.hs();
    ensure(&mut cache.att, b * nh * t * t);
    let scale = 1.0 / (hs as f32).sqrt();
    for_chunks2(
        s.par,
        out,
        t * c,
        &mut cache.att,
        nh * t * t,
        |bi, o, att| {
            let x = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c]; // (T, 3C)
            for h in 0..nh {
                let at = &mut att[h * t * t..(h + 1) * t * t];
                let (q, k, v) = (
                    view(x, t, h * hs, hs, 3 * c),
                    view(x, t, c + h * hs, hs, 3 * c),
                    view(x, t, 2 * c + h * hs, hs, 3 * c),
                );
                for i0 in (0..t).step_by(BLOCK) {
                    let i1 = (i0 + BLOCK).min(t);
                    // pre (i1-i0, i1) = q[i0..i1] k[0..i1]^T * scale
                    matmul(
                        view_mut(at, i1 - i0, i0 * t, i1, t),
                        Accum::Replace,
                        q.subrows(i0, i1 - i0),
                        k.subrows(0, i1).transpose(),
                        scale,
                        faer::Par::Seq,
                    );
                    for i in i0..i1 {
                        softmax_row(&mut at[i * t..i * t + i1], i + 1); // zeros j in i+1..i1
                    }
                    // y[i0..i1] (i1-i0, hs) = att[i0..i1, 0..i1] v[0..i1]
                    matmul(
                        view_mut(o, i1 - i0, i0 * c + h * hs, hs, c),
                        Accum::Replace,
                        view(at, i1 - i0, i0 * t, i1, t),
                        v.subrows(0, i1),
                        1.0,
                        faer::Par::Seq,
                    );
                }
            }
            Ok(())
        },
    )
}

/// dqkv (B*T, 3C) `=` gradient of the forward that filled `cache` (through
/// [`attention_forward`]), given dout (B*T, C).
pub fn attention_backward(
    dout: &[f32],
    s: AttnShape,
    cache: &mut AttnCache,
    dqkv: &mut [f32],
) -> Result<()> {
    let qkv = std::mem::take(&mut cache.qkv);
    let r = attention_backward_qkv(&qkv, dout, s, cache, dqkv);
    cache.qkv = qkv;
    r
}

/// [`attention_backward`] with the forward's qkv passed in (after [`attention_forward_qkv`]).
pub fn attention_backward_qkv(
    qkv: &[f32],
    dout: &[f32],
    s: AttnShape,
    cache: &mut AttnCache,
    dqkv: &mut [f32],
) -> Result<()> {
    let (b, t, c, nh) = (s.b, s.t, s.c, s.heads);
    check_shape(&s, qkv.len())?;
    check_len("attention", "output gradient", dout.len(), b * t * c)?;
    check_len("attention", "qkv gradient", dqkv.len(), b * t * 3 * c)?;
    check_len(
        "attention",
        "cached probabilities",
        cache.att.len(),
        b * nh * t * t,
    )?;
    if b * t == 0 {
        return Ok(());
    }
    let hs = s.hs();
    let scale = 1.0 / (hs as f32).sqrt();
    ensure(&mut cache.datt, b * t * t); // one (T, T) scratch per batch
    let att = &cache.att;
    for_chunks2(
        s.par,
        dqkv,
        t * 3 * c,
        &mut cache.datt,
        t * t,
        |bi, dx, da| {
            let x = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c]; // (T, 3C)
            let dy_b = &dout[bi * t * c..(bi + 1) * t * c]; // (T, C)
            for h in 0..nh {
                let at = &att[(bi * nh + h) * t * t..(bi * nh + h + 1) * t * t];
                let (q, k, v) = (
                    view(x, t, h * hs, hs, 3 * c),
                    view(x, t, c + h * hs, hs, 3 * c),
                    view(x, t, 2 * c + h * hs, hs, 3 * c),
                );
                let dy = view(dy_b, t, h * hs, hs, c);
                for i0 in (0..t).step_by(BLOCK) {
                    let i1 = (i0 + BLOCK).min(t);
                    // datt[i0..i1, 0..i1] = dy[i0..i1] v[0..i1]^T
                    matmul(
                        view_mut(da, i1 - i0, i0 * t, i1, t),
                        Accum::Replace,
                        dy.subrows(i0, i1 - i0),
                        v.subrows(0, i1).transpose(),
                        1.0,
                        faer::Par::Seq,
                    );
                    // softmax backward, row i over j <= i: dpre = att * (datt - sum_j att*datt)
                    for i in i0..i1 {
                        softmax_backward_row(
                            &at[i * t..i * t + i1],
                            &mut da[i * t..i * t + i1],
                            i + 1,
                        );
                    }
                    // dq[i0..i1] = scale dpre[i0..i1, 0..i1] k[0..i1]
                    matmul(
                        view_mut(dx, i1 - i0, i0 * 3 * c + h * hs, hs, 3 * c),
                        Accum::Replace,
                        view(da, i1 - i0, i0 * t, i1, t),
                        k.subrows(0, i1),
                        scale,
                        faer::Par::Seq,
                    );
                }
                // key block [j0, j1) is read by query rows j0..T only
                for j0 in (0..t).step_by(BLOCK) {
                    let j1 = (j0 + BLOCK).min(t);
                    // dk[j0..j1] = scale dpre[j0..T, j0..j1]^T q[j0..T]
                    matmul(
                        view_mut(dx, j1 - j0, j0 * 3 * c + c + h * hs, hs, 3 * c),
                        Accum::Replace,
                        view(da, t - j0, j0 * t + j0, j1 - j0, t).transpose(),
                        q.subrows(j0, t - j0),
                        scale,
                        faer::Par::Seq,
                    );
                    // dv[j0..j1] = att[j0..T, j0..j1]^T dy[j0..T]
                    matmul(
                        view_mut(dx, j1 - j0, j0 * 3 * c + 2 * c + h * hs, hs, 3 * c),
                        Accum::Replace,
                        view(at, t - j0, j0 * t + j0, j1 - j0, t).transpose(),
                        dy.subrows(j0, t - j0),
                        1.0,
                        faer::Par::Seq,
                    );
                }
            }
            Ok(())
        },
    )
}

impl AttnCache {
    /// The probabilities buffer, sized for `len` elements (B*H*T*T), for [`seq_forward_t`].
    pub(crate) fn probs_mut(&mut self, len: usize) -> &mut [f32] {
        ensure(&mut self.att, len);
        &mut self.att
    }

    /// The probabilities written by the last forward.
    pub(crate) fn probs(&self) -> &[f32] {
        &self.att
    }
}

/// The views of head `h` in a feature-major sequence `x (F, t)` whose rows `f0 + h*hs ..` are the
/// head's features: `(hs, t)`, row stride t.
fn head_t(x: &[f32], f0: usize, h: usize, hs: usize, t: usize) -> MatRef<'_, f32> {
    view(x, hs, (f0 + h * hs) * t, t, t)
}

/// Feature-major attention of one sequence (the layout the sparse products work in):
/// `qkvt (3C, t)` holds q^T, k^T, v^T (rows 0..C, C..2C, 2C..3C; column = position);
/// `yt (C, t) =` the output transposed; `att (H, t, t)` the probabilities (causal blocks written).
/// The same products as [`attention_forward_qkv`], on transposed views:
///   pre[i0..i1, 0..i1] = (q^T[:, i0..i1])^T k^T[:, 0..i1] / sqrt(hs);
///   y^T[:, i0..i1] = v^T[:, 0..i1] att[i0..i1, 0..i1]^T.
/// Single-threaded; lengths are the caller's to check.
pub(crate) fn seq_forward_t(
    qkvt: &[f32],
    t: usize,
    c: usize,
    heads: usize,
    att: &mut [f32],
    yt: &mut [f32],
) {
    let hs = c / heads;
    let scale = 1.0 / (hs as f32).sqrt();
    for h in 0..heads {
        let at = &mut att[h * t * t..(h + 1) * t * t];
        let (qt, kt, vt) = (
            head_t(qkvt, 0, h, hs, t),
            head_t(qkvt, c, h, hs, t),
            head_t(qkvt, 2 * c, h, hs, t),
        );
        for i0 in (0..t).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(t);
            matmul(
                view_mut(at, i1 - i0, i0 * t, i1, t),
                Accum::Replace,
                qt.subcols(i0, i1 - i0).transpose(),
                kt.subcols(0, i1),
                scale,
                faer::Par::Seq,
            );
            for i in i0..i1 {
                softmax_row(&mut at[i * t..i * t + i1], i + 1); // zeros j in i+1..i1
            }
            matmul(
                view_mut(yt, hs, h * hs * t + i0, i1 - i0, t),
                Accum::Replace,
                vt.subcols(0, i1),
                view(at, i1 - i0, i0 * t, i1, t).transpose(),
                1.0,
                faer::Par::Seq,
            );
        }
    }
}

/// The backward of [`seq_forward_t`]: `dqkvt (3C, t) =` the gradient of qkvt given
/// `dyt (C, t)`; `datt (t, t)` is scratch. Transposed forms of [`attention_backward_qkv`]'s
/// products: dq^T = k^T dpre^T (per query block), dk^T = q^T dpre and dv^T = dy^T att (per key
/// block, over the query rows that read it).
pub(crate) fn seq_backward_t(
    qkvt: &[f32],
    dyt: &[f32],
    t: usize,
    c: usize,
    heads: usize,
    att: &[f32],
    datt: &mut [f32],
    dqkvt: &mut [f32],
) {
    let hs = c / heads;
    let scale = 1.0 / (hs as f32).sqrt();
    for h in 0..heads {
        let at = &att[h * t * t..(h + 1) * t * t];
        let (qt, kt, vt, dy) = (
            head_t(qkvt, 0, h, hs, t),
            head_t(qkvt, c, h, hs, t),
            head_t(qkvt, 2 * c, h, hs, t),
            head_t(dyt, 0, h, hs, t),
        );
        for i0 in (0..t).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(t);
            // datt[i0..i1, 0..i1] = dy[i0..i1] v[0..i1]^T
            matmul(
                view_mut(datt, i1 - i0, i0 * t, i1, t),
                Accum::Replace,
                dy.subcols(i0, i1 - i0).transpose(),
                vt.subcols(0, i1),
                1.0,
                faer::Par::Seq,
            );
            for i in i0..i1 {
                softmax_backward_row(&at[i * t..i * t + i1], &mut datt[i * t..i * t + i1], i + 1);
            }
            // dq^T[:, i0..i1] = scale k^T[:, 0..i1] dpre[i0..i1, 0..i1]^T
            matmul(
                view_mut(dqkvt, hs, h * hs * t + i0, i1 - i0, t),
                Accum::Replace,
                kt.subcols(0, i1),
                view(datt, i1 - i0, i0 * t, i1, t).transpose(),
                scale,
                faer::Par::Seq,
            );
        }
        for j0 in (0..t).step_by(BLOCK) {
            let j1 = (j0 + BLOCK).min(t);
            // dk^T[:, j0..j1] = scale q^T[:, j0..t] dpre[j0..t, j0..j1]
            matmul(
                view_mut(dqkvt, hs, (c + h * hs) * t + j0, j1 - j0, t),
                Accum::Replace,
                qt.subcols(j0, t - j0),
                view(datt, t - j0, j0 * t + j0, j1 - j0, t),
                scale,
                faer::Par::Seq,
            );
            // dv^T[:, j0..j1] = dy^T[:, j0..t] att[j0..t, j0..j1]
            matmul(
                view_mut(dqkvt, hs, (2 * c + h * hs) * t + j0, j1 - j0, t),
                Accum::Replace,
                dy.subcols(j0, t - j0),
                view(at, t - j0, j0 * t + j0, j1 - j0, t),
                1.0,
                faer::Par::Seq,
            );
        }
    }
}

#[cfg(test)]
mod seq_t_tests {
    use super::*;

    /// Feature-major attention of each sequence equals the row-major attention, forward and
    /// backward, at a length that is not a multiple of the causal block.
    #[test]
    fn feature_major_sequences_match_the_row_major_attention() {
        let (b, t, c, heads) = (2, BLOCK + 7, 12, 3);
        let n = b * t;
        let qkv: Vec<f32> = (0..n * 3 * c)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 1.5)
            .collect();
        let dout: Vec<f32> = (0..n * c)
            .map(|i| (i * 53 % 97) as f32 / 97.0 - 0.5)
            .collect();
        let s = AttnShape {
            b,
            t,
            c,
            heads,
            par: Par::Seq,
        };
        let (mut y, mut dqkv, mut cache) =
            (vec![0.0; n * c], vec![0.0; n * 3 * c], AttnCache::default());
        attention_forward(&qkv, s, &mut y, &mut cache).unwrap();
        attention_backward(&dout, s, &mut cache, &mut dqkv).unwrap();
        // (F, t) of sequence bi from the row-major (n, F)
        let tr = |x: &[f32], f: usize, bi: usize| -> Vec<f32> {
            (0..f * t)
                .map(|e| x[(bi * t + e % t) * f + e / t])
                .collect()
        };
        for bi in 0..b {
            let qt = tr(&qkv, 3 * c, bi);
            let (mut att, mut yt) = (vec![f32::NAN; heads * t * t], vec![0.0; c * t]);
            seq_forward_t(&qt, t, c, heads, &mut att, &mut yt);
            let mut dqt = vec![0.0; 3 * c * t];
            let mut datt = vec![f32::NAN; t * t];
            seq_backward_t(
                &qt,
                &tr(&dout, c, bi),
                t,
                c,
                heads,
                &att,
                &mut datt,
                &mut dqt,
            );
            for (what, got, want) in [
                ("y", &yt, tr(&y, c, bi)),
                ("dqkv", &dqt, tr(&dqkv, 3 * c, bi)),
            ] {
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-6 + 4.0 * t as f32 * f32::EPSILON * w.abs().max(1.0);
                    assert!((g - w).abs() <= tol, "{what}[{e}] batch {bi}: {g} vs {w}");
                }
            }
        }
    }
}

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

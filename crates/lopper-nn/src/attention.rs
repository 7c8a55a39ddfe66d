//! Causal multi-head self-attention (GPT-2 layout): qkv (B*T, 3C) -> out (B*T, C).
//!
//! Row n of qkv is `[q (C) | k (C) | v (C)]`; head h uses columns `h*hs..(h+1)*hs` of each, hs = C/H.
//! Per (batch, head), in parallel over the B*H pairs, each product a faer GEMM on gathered contiguous
//! (T, hs) blocks:
//!   pre (T, T) = q k^T / sqrt(hs);  att = softmax over j <= i (0 for j > i);  y (T, hs) = att v.
use crate::Result;
use crate::error::check_len;
use crate::util::ensure;
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};
use rayon::prelude::*;

const N: Transpose = Transpose::No;
const T: Transpose = Transpose::Yes;

/// Shape of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub heads: usize,
    /// Parallelism over the B*H (batch, head) pairs; each pair's GEMMs run on one thread.
    pub par: Par,
}

/// One (batch, head) pair's index and its q, k, v, att, y blocks, as the zipped chunk iterators give them.
type HeadBufs<'a> = (
    usize,
    (
        (
            ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]),
            &'a mut [f32],
        ),
        &'a mut [f32],
    ),
);

/// Runs `f(i, chunk)` over the `ca`-long chunks of `a`, in parallel (rayon) or in order.
fn for_chunks<F>(par: Par, a: &mut [f32], ca: usize, f: F) -> Result<()>
where
    F: Fn(usize, &mut [f32]) -> Result<()> + Sync + Send,
{
    if par.threads() > 1 {
        a.par_chunks_mut(ca)
            .enumerate()
            .try_for_each(|(i, x)| f(i, x))
    } else {
        a.chunks_mut(ca).enumerate().try_for_each(|(i, x)| f(i, x))
    }
}

impl AttnShape {
    fn hs(&self) -> usize {
        self.c / self.heads
    }
    /// FLOPs of forward and backward (causal half not subtracted: the GEMMs compute the full T x T).
    pub fn flops(&self) -> crate::flops::StepFlops {
        let f = 2 * 2 * (self.b * self.heads * self.t * self.t * self.hs()) as u64;
        crate::flops::StepFlops {
            forward: crate::Flops::same(f),
            backward: crate::Flops::same(2 * f),
        }
    }
}

/// What the backward needs from the forward: q, k, v gathered per head (B, H, T, hs) and the
/// attention probabilities (B, H, T, T). Also holds the backward's per-head scratch.
#[derive(Clone, Debug, Default)]
pub struct AttnCache {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    y: Vec<f32>,
    datt: Vec<f32>,
}

/// out (B*T, C) `=` attention of qkv (B*T, 3C); fills `cache`.
pub fn attention_forward(
    qkv: &[f32],
    s: AttnShape,
    out: &mut [f32],
    cache: &mut AttnCache,
) -> Result<()> {
    let (b, t, c, nh) = (s.b, s.t, s.c, s.heads);
    if nh == 0 || !c.is_multiple_of(nh) {
        return Err(crate::error::invalid(
            "attention",
            format!("width {c} is not a multiple of {nh} heads"),
        ));
    }
    check_len("attention", "qkv", qkv.len(), b * t * 3 * c)?;
    check_len("attention", "output", out.len(), b * t * c)?;
    let hs = s.hs();
    let blk = t * hs;
    for v in [&mut cache.q, &mut cache.k, &mut cache.v, &mut cache.y] {
        ensure(v, b * nh * blk);
    }
    ensure(&mut cache.att, b * nh * t * t);
    let scale = 1.0 / (hs as f32).sqrt();
    let AttnCache {
        q, k, v, att, y, ..
    } = cache;
    let body = |(bh, ((((q, k), v), att), y)): HeadBufs<'_>| -> Result<()> {
        let (bi, h) = (bh / nh, bh % nh);
        for ti in 0..t {
            let row = &qkv[(bi * t + ti) * 3 * c..(bi * t + ti + 1) * 3 * c];
            q[ti * hs..(ti + 1) * hs].copy_from_slice(&row[h * hs..(h + 1) * hs]);
            k[ti * hs..(ti + 1) * hs].copy_from_slice(&row[c + h * hs..c + (h + 1) * hs]);
            v[ti * hs..(ti + 1) * hs].copy_from_slice(&row[2 * c + h * hs..2 * c + (h + 1) * hs]);
        }
        let (qm, km, vm) = (
            MatRef::new(q, t, hs)?,
            MatRef::new(k, t, hs)?,
            MatRef::new(v, t, hs)?,
        );
        gemm(MatMut::new(att, t, t)?, qm, N, km, T, scale, 0.0, Par::Seq)?; // pre (T, T) = q k^T * scale
        for i in 0..t {
            let r = &mut att[i * t..(i + 1) * t];
            let mx = r[..=i].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in r[..=i].iter_mut() {
                *x = (*x - mx).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            r[..=i].iter_mut().for_each(|x| *x *= inv);
            r[i + 1..].fill(0.0);
        }
        gemm(
            MatMut::new(y, t, hs)?,
            MatRef::new(att, t, t)?,
            N,
            vm,
            N,
            1.0,
            0.0,
            Par::Seq,
        )?; // y (T, hs) = att v
        Ok(())
    };
    if s.par.threads() > 1 {
        q.par_chunks_mut(blk)
            .zip(k.par_chunks_mut(blk))
            .zip(v.par_chunks_mut(blk))
            .zip(att.par_chunks_mut(t * t))
            .zip(y.par_chunks_mut(blk))
            .enumerate()
            .try_for_each(body)?;
    } else {
        q.chunks_mut(blk)
            .zip(k.chunks_mut(blk))
            .zip(v.chunks_mut(blk))
            .zip(att.chunks_mut(t * t))
            .zip(y.chunks_mut(blk))
            .enumerate()
            .try_for_each(body)?;
    }
    // scatter y (B, H, T, hs) -> out (B*T, C)
    for_chunks(s.par, out, t * c, |bi, o| {
        for h in 0..nh {
            let yb = &y[(bi * nh + h) * blk..(bi * nh + h + 1) * blk];
            for ti in 0..t {
                o[ti * c + h * hs..ti * c + (h + 1) * hs]
                    .copy_from_slice(&yb[ti * hs..(ti + 1) * hs]);
            }
        }
        Ok(())
    })
}

/// dqkv (B*T, 3C) `=` gradient of the forward that filled `cache`, given dout (B*T, C).
pub fn attention_backward(
    dout: &[f32],
    s: AttnShape,
    cache: &mut AttnCache,
    dqkv: &mut [f32],
) -> Result<()> {
    let (b, t, c, nh) = (s.b, s.t, s.c, s.heads);
    check_len("attention", "output gradient", dout.len(), b * t * c)?;
    check_len("attention", "qkv gradient", dqkv.len(), b * t * 3 * c)?;
    check_len(
        "attention",
        "cached probabilities",
        cache.att.len(),
        b * nh * t * t,
    )?;
    let hs = s.hs();
    let blk = t * hs;
    let scale = 1.0 / (hs as f32).sqrt();
    // per head scratch: dy (T, hs) then dq, dk, dv (T, hs) each, and datt (T, T)
    ensure(&mut cache.datt, b * nh * (t * t + 4 * blk));
    let AttnCache {
        q, k, v, att, datt, ..
    } = cache;
    let per = t * t + 4 * blk;
    for_chunks(s.par, datt, per, |bh, sc| -> Result<()> {
        let (bi, h) = (bh / nh, bh % nh);
        let (da, rest) = sc.split_at_mut(t * t);
        let (dy, rest) = rest.split_at_mut(blk);
        let (dq, rest) = rest.split_at_mut(blk);
        let (dk, dv) = rest.split_at_mut(blk);
        for ti in 0..t {
            let r = &dout[(bi * t + ti) * c + h * hs..(bi * t + ti) * c + (h + 1) * hs];
            dy[ti * hs..(ti + 1) * hs].copy_from_slice(r);
        }
        let r = bh * blk..(bh + 1) * blk;
        let (qm, km, vm) = (
            MatRef::new(&q[r.clone()], t, hs)?,
            MatRef::new(&k[r.clone()], t, hs)?,
            MatRef::new(&v[r], t, hs)?,
        );
        let am = MatRef::new(&att[bh * t * t..(bh + 1) * t * t], t, t)?;
        let dym = MatRef::new(dy, t, hs)?;
        gemm(MatMut::new(da, t, t)?, dym, N, vm, T, 1.0, 0.0, Par::Seq)?; // datt (T, T) = dy v^T
        gemm(MatMut::new(dv, t, hs)?, am, T, dym, N, 1.0, 0.0, Par::Seq)?; // dv (T, hs) = att^T dy
        // softmax backward, row i over j <= i: dpre = att * (datt - sum_j att*datt)
        let a = am.data();
        for i in 0..t {
            let (ar, dr) = (&a[i * t..(i + 1) * t], &mut da[i * t..(i + 1) * t]);
            let dot: f32 = ar[..=i].iter().zip(&dr[..=i]).map(|(x, y)| x * y).sum();
            for j in 0..=i {
                dr[j] = ar[j] * (dr[j] - dot);
            }
            dr[i + 1..].fill(0.0);
        }
        let dpm = MatRef::new(da, t, t)?;
        gemm(MatMut::new(dq, t, hs)?, dpm, N, km, N, scale, 0.0, Par::Seq)?; // dq = scale dpre k
        gemm(MatMut::new(dk, t, hs)?, dpm, T, qm, N, scale, 0.0, Par::Seq)?; // dk = scale dpre^T q
        Ok(())
    })?;
    let datt = &cache.datt;
    for_chunks(s.par, dqkv, t * 3 * c, |bi, o| {
        for h in 0..nh {
            let sc = &datt[(bi * nh + h) * per + t * t..(bi * nh + h + 1) * per];
            let (dq, dk, dv) = (&sc[blk..2 * blk], &sc[2 * blk..3 * blk], &sc[3 * blk..]);
            for ti in 0..t {
                let row = &mut o[ti * 3 * c..(ti + 1) * 3 * c];
                row[h * hs..(h + 1) * hs].copy_from_slice(&dq[ti * hs..(ti + 1) * hs]);
                row[c + h * hs..c + (h + 1) * hs].copy_from_slice(&dk[ti * hs..(ti + 1) * hs]);
                row[2 * c + h * hs..2 * c + (h + 1) * hs]
                    .copy_from_slice(&dv[ti * hs..(ti + 1) * hs]);
            }
        }
        Ok(())
    })
}

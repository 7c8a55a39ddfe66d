//! Softmax cross-entropy, mean over rows: `loss = -1/N sum_n log softmax(logits[n])[target[n]]`.
use crate::Result;
use crate::error::{check_len, invalid};
use lopper_tensor::Par;
use rayon::prelude::*;

/// logits (N, V) -> probs (N, V); returns the mean loss (accumulated in f64).
pub fn cross_entropy_forward(
    logits: &[f32],
    targets: &[u32],
    v: usize,
    probs: &mut [f32],
) -> Result<f32> {
    cross_entropy_forward_par(logits, targets, v, probs, Par::Seq)
}

/// [`cross_entropy_forward`] with its rows split over rayon when `par` has several threads (and
/// N * V >= 32K).
pub fn cross_entropy_forward_par(
    logits: &[f32],
    targets: &[u32],
    v: usize,
    probs: &mut [f32],
    par: Par,
) -> Result<f32> {
    let n = targets.len();
    check_len("cross_entropy", "logits", logits.len(), n * v)?;
    check_len("cross_entropy", "probs", probs.len(), n * v)?;
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
        return Err(invalid(
            "cross_entropy",
            format!("target {bad} out of range ({v} classes)"),
        ));
    }
    if v == 0 {
        return Ok(0.0);
    }
    // rows (l, p, target) -> sum of -log p[target]
    let rows = |l: &[f32], p: &mut [f32], tg: &[u32]| -> f64 {
        let mut total = 0.0f64;
        for ((l, p), &t) in l.chunks_exact(v).zip(p.chunks_exact_mut(v)).zip(tg) {
            p.copy_from_slice(l);
            crate::kernels::softmax_row(p, v); // through fast_exp (relative error < 3e-7)
            total -= (p[t as usize] as f64).max(1e-30).ln();
        }
        total
    };
    let t = par.threads();
    let total: f64 = if t > 1 && n * v >= 1 << 15 {
        let r = n.div_ceil(t);
        logits
            .par_chunks(r * v)
            .zip(probs.par_chunks_mut(r * v))
            .zip(targets.par_chunks(r))
            .map(|((l, p), tg)| rows(l, p, tg))
            .sum()
    } else {
        rows(logits, probs, targets)
    };
    Ok(if n == 0 {
        0.0
    } else {
        (total / n as f64) as f32
    })
}

/// dlogits (N, V) `=` (probs - onehot(target)) / N.
pub fn cross_entropy_backward(
    probs: &[f32],
    targets: &[u32],
    v: usize,
    dlogits: &mut [f32],
) -> Result<()> {
    let n = targets.len();
    check_len("cross_entropy", "probs", probs.len(), n * v)?;
    check_len("cross_entropy", "logits gradient", dlogits.len(), n * v)?;
    let inv = 1.0 / n.max(1) as f32;
    for i in 0..n {
        let t = targets[i] as usize;
        if t >= v {
            return Err(invalid(
                "cross_entropy",
                format!("target {t} out of range ({v} classes)"),
            ));
        }
        let (p, d) = (&probs[i * v..(i + 1) * v], &mut dlogits[i * v..(i + 1) * v]);
        for j in 0..v {
            d[j] = p[j] * inv;
        }
        d[t] -= inv;
    }
    Ok(())
}

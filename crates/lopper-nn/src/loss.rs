//! Softmax cross-entropy, mean over rows: `loss = -1/N sum_n log softmax(logits[n])[target[n]]`.
use crate::Result;
use crate::error::{check_len, invalid};

/// logits (N, V) -> probs (N, V); returns the mean loss (accumulated in f64).
pub fn cross_entropy_forward(
    logits: &[f32],
    targets: &[u32],
    v: usize,
    probs: &mut [f32],
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
    let mut total = 0.0f64;
    for i in 0..n {
        let (l, p) = (&logits[i * v..(i + 1) * v], &mut probs[i * v..(i + 1) * v]);
        p.copy_from_slice(l);
        if v > 0 {
            crate::kernels::softmax_row(p, v); // through fast_exp (relative error < 3e-7)
        }
        total -= (p[targets[i] as usize] as f64).max(1e-30).ln();
    }
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

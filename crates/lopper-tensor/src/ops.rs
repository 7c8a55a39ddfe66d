//! Elementwise basics on f32 slices. Lengths must match; mismatches are errors, not panics.
use crate::{Error, Result};

fn same_len(op: &'static str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("lengths {a} and {b} differ")));
    }
    Ok(())
}

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("axpy", x.len(), y.len())?;
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
    Ok(())
}

/// `x *= alpha`.
pub fn scale(alpha: f32, x: &mut [f32]) {
    for v in x {
        *v *= alpha;
    }
}

/// `x[i] = 0` wherever `mask[i]` is false.
pub fn apply_mask(x: &mut [f32], mask: &[bool]) -> Result<()> {
    same_len("apply_mask", x.len(), mask.len())?;
    // a select, not a branch: masks are random, and the select vectorizes
    for (v, &m) in x.iter_mut().zip(mask) {
        *v = if m { *v } else { 0.0 };
    }
    Ok(())
}

/// Dot product accumulated in f32 with eight independent partial sums (vectorizes).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Largest `|a - b|` (0 for empty input).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> Result<f32> {
    same_len("max_abs_diff", a.len(), b.len())?;
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

/// Frobenius norm, accumulated in f64.
pub fn norm2(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let mut y = vec![1.0, 2.0, 3.0];
        axpy(2.0, &[1.0, 1.0, 1.0], &mut y).unwrap();
        assert_eq!(y, [3.0, 4.0, 5.0]);
        assert!(axpy(1.0, &[1.0], &mut y).is_err());
        apply_mask(&mut y, &[true, false, true]).unwrap();
        assert_eq!(y, [3.0, 0.0, 5.0]);
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), want);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 0.0]).unwrap(), 2.0);
        assert!((norm2(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }
}

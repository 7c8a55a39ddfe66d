//! Small helpers: blocked transpose, resizing scratch buffers, deterministic init.
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// `dst (cols, rows) = src (rows, cols)^T`, in 32x32 blocks (parallel over row blocks when large).
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    debug_assert_eq!(src.len(), rows * cols);
    debug_assert_eq!(dst.len(), rows * cols);
    const B: usize = 32;
    // dst row j (a column of src) is written by every src row block, so split on dst rows: the
    // task for dst rows j0..j1 reads src[:, j0..j1].
    let task = |j0: usize, out: &mut [f32]| {
        let j1 = (j0 + out.len() / rows.max(1)).min(cols);
        let mut i0 = 0;
        while i0 < rows {
            let i1 = (i0 + B).min(rows);
            for j in j0..j1 {
                let o = &mut out[(j - j0) * rows..(j - j0 + 1) * rows];
                for i in i0..i1 {
                    o[i] = src[i * cols + j];
                }
            }
            i0 = i1;
        }
    };
    if rows == 0 || cols == 0 {
        return;
    }
    if rows * cols >= 1 << 16 {
        use rayon::prelude::*;
        dst.par_chunks_mut(B * rows)
            .enumerate()
            .for_each(|(b, out)| task(b * B, out));
    } else {
        for (b, out) in dst.chunks_mut(B * rows).enumerate() {
            task(b * B, out);
        }
    }
}

/// Resizes `v` to `n` (only grows capacity once; contents unspecified).
pub(crate) fn ensure(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        v.resize(n, 0.0);
    }
}

/// `n` samples of N(0, std^2), deterministic in `seed`.
pub(crate) fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std.max(0.0)).expect("std >= 0");
    (0..n).map(|_| d.sample(&mut r)).collect()
}

/// `y += x`.
#[inline]
pub(crate) fn add_into(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_small_and_large() {
        for (r, c) in [(1, 1), (3, 5), (33, 70), (300, 257)] {
            let a: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let mut t = vec![0.0; r * c];
            super::transpose(&a, r, c, &mut t);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], a[i * c + j]);
                }
            }
        }
    }
}

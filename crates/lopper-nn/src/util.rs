//! Small helpers: resizing scratch buffers, deterministic init, `y += x`.
use lopper_tensor::Par;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Resizes `v` to `n` (only grows capacity once; contents unspecified).
pub(crate) fn ensure(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        v.resize(n, 0.0);
    }
}

/// A slice of `n` elements of `v` that starts on a 64-byte boundary (`v` grows to hold the offset;
/// contents unspecified). The sparse kernels read such an operand in place instead of copying it into
/// an aligned slab.
pub(crate) fn aligned(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n + 15 {
        v.resize(n + 15, 0.0);
    }
    let off = (16 - (v.as_ptr() as usize / 4) % 16) % 16;
    &mut v[off..off + n]
}

/// The slice [`aligned`] returned for the same `v` and `n` (`v` unchanged since).
pub(crate) fn aligned_ref(v: &[f32], n: usize) -> &[f32] {
    let off = (16 - (v.as_ptr() as usize / 4) % 16) % 16;
    &v[off.min(v.len())..(off + n).min(v.len())]
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

/// Elements from which the elementwise helpers below split over threads.
const PAR_MIN: usize = 1 << 14;

/// The length of each thread's range when `len` elements are split over `par`'s threads: `None`
/// (stay on this thread) with one thread or below `work >= PAR_MIN` elements of work. Ranges are
/// multiples of 16 floats (64 bytes), so that the threads' ranges do not share a cache line.
fn par_chunk(len: usize, work: usize, par: Par) -> Option<usize> {
    let threads = par.threads();
    (threads > 1 && work >= PAR_MIN).then(|| len.div_ceil(threads).next_multiple_of(16))
}

/// `y += x`, split over `par`'s threads (rayon) when there are several and the arrays are long.
pub(crate) fn add_into_par(y: &mut [f32], x: &[f32], par: Par) {
    debug_assert_eq!(y.len(), x.len());
    if let Some(chunk) = par_chunk(y.len(), y.len(), par) {
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| add_into(y, x));
    } else {
        add_into(y, x);
    }
}

/// `v = 0`, split over `par`'s threads when there are several and `v` is long (a dense layer's
/// gradient is zeroed every step: 13 MB for the benchmark GPT, on one core it was 1% of a step).
pub(crate) fn zero_par(v: &mut [f32], par: Par) {
    if let Some(chunk) = par_chunk(v.len(), v.len(), par) {
        v.par_chunks_mut(chunk).for_each(|v| v.fill(0.0));
    } else {
        v.fill(0.0);
    }
}

/// `db[j] += sum over rows r of y[r, j]` for y (rows, db.len()) row-major (a bias gradient), split
/// over `par`'s threads by ranges of columns when there are several and y is large. Each column's
/// sum runs over the rows in order, as on one thread, so the result does not depend on `par`.
pub(crate) fn add_col_sums_par(y: &[f32], db: &mut [f32], par: Par) {
    let m = db.len();
    if m == 0 {
        return;
    }
    debug_assert_eq!(y.len() % m, 0);
    let run = |j0: usize, db: &mut [f32]| {
        for row in y.chunks_exact(m) {
            add_into(db, &row[j0..j0 + db.len()]);
        }
    };
    if let Some(chunk) = par_chunk(m, y.len(), par).filter(|_| m >= 32) {
        db.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, db)| run(i * chunk, db));
    } else {
        run(0, db);
    }
}

/// `dw[p] += sum over parts of part[inv[p]]`: gradients computed in a `CsrTranspose`'s order (one
/// per thread's part of the rows) summed and read back in the source's order (`inv` is the
/// transpose's inverse permutation, as long as `dw` and every part; checked by the callers). The
/// parts are first added into the first one (which is overwritten with their sum), streaming, then
/// gathered once: one random read per entry (gathering from every part read each part at random,
/// 2.7% of a sparse GPT step against 1.4% for the old single-thread scatter). Both passes are split
/// over `par`'s threads by contiguous ranges, so each thread writes its own cache lines (a scatter
/// `dw[perm[q]] += g[q]` split by q would have both threads writing into the same ones).
pub(crate) fn add_gathered(dw: &mut [f32], inv: &[u32], parts: &mut [&mut [f32]], par: Par) {
    debug_assert!(inv.len() == dw.len() && parts.iter().all(|g| g.len() == dw.len()));
    let Some((first, rest)) = parts.split_first_mut() else {
        return;
    };
    for g in rest.iter() {
        add_into_par(first, g, par);
    }
    let g: &[f32] = first;
    let run = |dw: &mut [f32], inv: &[u32]| {
        for (d, &q) in dw.iter_mut().zip(inv) {
            *d += g[q as usize];
        }
    };
    if let Some(chunk) = par_chunk(dw.len(), dw.len(), par) {
        dw.par_chunks_mut(chunk)
            .zip(inv.par_chunks(chunk))
            .for_each(|(dw, inv)| run(dw, inv));
    } else {
        run(dw, inv);
    }
}

/// The AVX2+FMA and AVX-512 clones of one body: `fn $avx2` and `fn $avx512`, both with the given
/// signature and the same `$call` (the body, inlined into each clone's target features). Callers
/// check the CPU (`kernels::has_avx2`, `has_avx512`) before calling a clone (they are unsafe to call).
macro_rules! simd_clones {
    ($avx2:ident, $avx512:ident: fn($($a:ident : $t:ty),* $(,)?) => $call:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2($($a: $t),*) {
            $call
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $avx512($($a: $t),*) {
            $call
        }
    };
}
pub(crate) use simd_clones;

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values with varied magnitudes (so that a changed summation order shows).
    fn vals(n: usize, seed: u64) -> Vec<f32> {
        randn(n, 1.0, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v * (1 + i % 7) as f32)
            .collect()
    }

    /// Lengths below and above PAR_MIN, not multiples of 16, and empty.
    const LENS: [usize; 5] = [0, 1, 1000, PAR_MIN + 13, 3 * PAR_MIN + 1];
    const PARS: [Par; 4] = [Par::Seq, Par::Rayon(1), Par::Rayon(2), Par::Rayon(3)];

    #[test]
    fn threaded_helpers_equal_their_sequential_definitions() {
        for n in LENS {
            for par in PARS {
                // y += x
                let (x, y0) = (vals(n, 1), vals(n, 2));
                let mut y = y0.clone();
                add_into_par(&mut y, &x, par);
                let want: Vec<f32> = y0.iter().zip(&x).map(|(a, b)| a + b).collect();
                assert_eq!(y, want, "add_into_par n={n} {par:?}");
                // v = 0
                zero_par(&mut y, par);
                assert!(y.iter().all(|&v| v == 0.0), "zero_par n={n} {par:?}");
            }
        }
    }

    #[test]
    fn add_gathered_reads_every_part_through_the_inverse_permutation() {
        for n in LENS {
            // a permutation with no structure: i -> (i * 7919 + 11) mod n when gcd(7919, n) = 1
            let inv: Vec<u32> = if n == 0 {
                vec![]
            } else {
                let step = if n % 7919 == 0 { 1 } else { 7919 };
                (0..n).map(|i| ((i * step + 11) % n) as u32).collect()
            };
            let parts: Vec<Vec<f32>> = (0..3).map(|s| vals(n, 10 + s)).collect();
            for k in 0..=3 {
                let refs: Vec<&[f32]> = parts[..k].iter().map(|p| p.as_slice()).collect();
                for par in PARS {
                    let mut owned: Vec<Vec<f32>> = parts[..k].to_vec();
                    let mut muts: Vec<&mut [f32]> =
                        owned.iter_mut().map(|p| p.as_mut_slice()).collect();
                    let mut dw = vals(n, 5);
                    let want: Vec<f32> = dw
                        .iter()
                        .zip(&inv)
                        .map(|(&d, &q)| {
                            // the parts summed in order, then added: the order the threads use
                            let s = refs.iter().fold(0.0f32, |s, p| s + p[q as usize]);
                            if k == 0 { d } else { d + s }
                        })
                        .collect();
                    add_gathered(&mut dw, &inv, &mut muts, par);
                    assert_eq!(dw, want, "add_gathered n={n} parts={k} {par:?}");
                }
            }
        }
    }

    #[test]
    fn add_col_sums_par_sums_each_column_in_row_order() {
        for (rows, m) in [(0, 5), (3, 0), (1, 1), (7, 33), (300, 100), (1024, 257)] {
            let y = vals(rows * m, 3);
            for par in PARS {
                let mut db = vals(m, 4);
                let mut want = db.clone();
                for r in 0..rows {
                    for j in 0..m {
                        want[j] += y[r * m + j];
                    }
                }
                add_col_sums_par(&y, &mut db, par);
                assert_eq!(db, want, "add_col_sums_par {rows}x{m} {par:?}");
            }
        }
    }
}

//! N:M channel permutation (as NVIDIA ASP does): reorder the input channels (columns) of a weight
//! so that N:M pruning along the rows keeps more magnitude. The permutation must also be applied
//! to whatever produces those channels (the previous layer's output rows), so the network computes
//! the same function; this module finds it and reports the gain.
//!
//! Search: greedy column swaps between different groups. Each sweep takes every column in turn,
//! finds the swap partner with the largest gain in kept magnitude, and applies it when the gain is
//! positive; sweeps repeat until none improves or `max_sweeps` is reached. The result never keeps
//! less than the identity.
use crate::param::matrix_dims;
use crate::{Error, Result};
use serde::Serialize;

/// The outcome of a permutation search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Permutation {
    /// `permuted[:, j] = original[:, perm[j]]`.
    pub perm: Vec<usize>,
    /// Fraction of total `|w|` that N:M keeps without permutation.
    pub kept_identity: f64,
    /// Fraction kept with the permutation.
    pub kept_permuted: f64,
    /// Swaps applied.
    pub swaps: usize,
}

/// Sum of the `n` largest of `xs`.
fn top_n_sum(xs: &mut [f64], n: usize) -> f64 {
    xs.sort_by(|a, b| b.total_cmp(a));
    xs[..n].iter().sum()
}

/// Magnitude N:M keeps in the `rows x cols` matrix `a` (absolute values) under column order `perm`.
fn kept_total(a: &[f64], rows: usize, cols: usize, perm: &[usize], n: usize, m: usize) -> f64 {
    let mut buf = vec![0.0; m];
    let mut total = 0.0;
    for r in 0..rows {
        for g in 0..cols / m {
            for t in 0..m {
                buf[t] = a[r * cols + perm[g * m + t]];
            }
            total += top_n_sum(&mut buf, n);
        }
    }
    total
}

/// Kept magnitude of groups `ga` and `gb` over all rows.
fn pair_kept(
    a: &[f64],
    rows: usize,
    cols: usize,
    perm: &[usize],
    n: usize,
    m: usize,
    groups: [usize; 2],
) -> f64 {
    let mut buf = vec![0.0; m];
    let mut total = 0.0;
    for r in 0..rows {
        for g in groups {
            for t in 0..m {
                buf[t] = a[r * cols + perm[g * m + t]];
            }
            total += top_n_sum(&mut buf, n);
        }
    }
    total
}

/// Searches a column permutation of the matrix view of `values` (`shape`) that raises the
/// magnitude kept by `n:m` pruning along rows.
pub fn search(
    values: &[f32],
    shape: &[usize],
    n: usize,
    m: usize,
    max_sweeps: usize,
) -> Result<Permutation> {
    search_bounded(values, shape, n, m, max_sweeps, u64::MAX)
}

/// [`search`] that stops once `max_evals` candidate swaps were evaluated (each costs
/// `O(rows * m)`), for large matrices.
pub fn search_bounded(
    values: &[f32],
    shape: &[usize],
    n: usize,
    m: usize,
    max_sweeps: usize,
    max_evals: u64,
) -> Result<Permutation> {
    let (rows, cols) = matrix_dims(shape);
    if n == 0 || n >= m || !cols.is_multiple_of(m) || rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::pattern(
            "<permute>",
            shape,
            format!(
                "{n}:{m} permutation needs 1 <= N < M, a last axis multiple of M and {} values",
                rows as u128 * cols as u128
            ),
        ));
    }
    let a: Vec<f64> = values.iter().map(|v| f64::from(v.abs())).collect();
    let total: f64 = a.iter().sum();
    let mut perm: Vec<usize> = (0..cols).collect();
    let base = kept_total(&a, rows, cols, &perm, n, m);
    let mut swaps = 0;
    let mut evals = 0u64;
    'sweeps: for _ in 0..max_sweeps {
        let mut improved = false;
        for i in 0..cols {
            let gi = i / m;
            let mut best = (0.0, usize::MAX);
            for j in 0..cols {
                let gj = j / m;
                if gj == gi {
                    continue;
                }
                if evals >= max_evals {
                    break 'sweeps;
                }
                evals += 1;
                let before = pair_kept(&a, rows, cols, &perm, n, m, [gi, gj]);
                perm.swap(i, j);
                let after = pair_kept(&a, rows, cols, &perm, n, m, [gi, gj]);
                perm.swap(i, j);
                let gain = after - before;
                if gain > best.0 + 1e-12 * (1.0 + before.abs()) {
                    best = (gain, j);
                }
            }
            if best.1 != usize::MAX {
                perm.swap(i, best.1);
                swaps += 1;
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
    let after = kept_total(&a, rows, cols, &perm, n, m);
    let frac = |k: f64| if total == 0.0 { 1.0 } else { k / total };
    Ok(Permutation {
        perm,
        kept_identity: frac(base),
        kept_permuted: frac(after.max(base)),
        swaps,
    })
}

/// `out[:, j] = values[:, perm[j]]` for the matrix view of `shape`.
pub fn permute_columns(values: &[f32], shape: &[usize], perm: &[usize]) -> Result<Vec<f32>> {
    let (rows, cols) = matrix_dims(shape);
    // lengths first: `seen` is only allocated for a `cols` that `perm` really holds
    if perm.len() != cols || rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::pattern(
            "<permute>",
            shape,
            format!(
                "{} values and a permutation of {} for a {rows}x{cols} matrix",
                values.len(),
                perm.len()
            ),
        ));
    }
    let mut seen = vec![false; cols];
    if perm
        .iter()
        .any(|&p| p >= cols || std::mem::replace(&mut seen[p], true))
    {
        return Err(Error::pattern(
            "<permute>",
            shape,
            format!("{perm:?} is not a permutation of {cols} columns"),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for r in 0..rows {
        out.extend(perm.iter().map(|&p| values[r * cols + p]));
    }
    Ok(out)
}

/// The inverse permutation; an error when `perm` is not a permutation of `0..perm.len()`.
pub fn inverse(perm: &[usize]) -> Result<Vec<usize>> {
    let n = perm.len();
    let mut inv = vec![usize::MAX; n];
    for (j, &p) in perm.iter().enumerate() {
        if p >= n || inv[p] != usize::MAX {
            return Err(Error::pattern(
                "<permute>",
                &[n],
                format!("entry {j} ({p}) makes this not a permutation of {n} columns"),
            ));
        }
        inv[p] = j;
    }
    Ok(inv)
}
